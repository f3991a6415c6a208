"""LightningModules (training logic) and the plain networks they train."""
from models.base import BaseTask
from models.nets import MLP
from models.regression import CovidRegressor

__all__ = ["BaseTask", "CovidRegressor", "MLP"]
