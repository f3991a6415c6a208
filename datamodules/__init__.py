"""LightningDataModules, one per homework, over shared machinery in `datamodules.base`."""
from datamodules.base import DataError, HomeworkDataModule, batch_loader, split_indices
from datamodules.covid import CovidDataModule

__all__ = ["CovidDataModule", "DataError", "HomeworkDataModule", "batch_loader", "split_indices"]
from datamodules.food import FoodDataModule  # noqa: E402
__all__ += ["FoodDataModule"]
