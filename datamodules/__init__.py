"""LightningDataModules, one per homework, over shared machinery in `datamodules.base`."""
from datamodules.errors import DataError
from datamodules.base import HomeworkDataModule, batch_loader, split_indices
from datamodules.covid import CovidDataModule
from datamodules.food import FoodDataModule

__all__ = ["CovidDataModule", "DataError", "FoodDataModule", "HomeworkDataModule", "batch_loader", "split_indices"]
