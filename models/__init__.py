"""LightningModules (training logic) and the plain networks they train."""
from models.base import BaseTask
from models.nets import MLP
from models.regression import CovidRegressor

__all__ = ["BaseTask", "CovidRegressor", "MLP"]
from models.classifier import ImageClassifier  # noqa: E402
from models.cnn import SampleCNN, build_net  # noqa: E402
__all__ += ["ImageClassifier", "SampleCNN", "build_net"]
