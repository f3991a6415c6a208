"""LightningModules (training logic) and the plain networks they train."""
from models.base import BaseTask
from models.classifier import ImageClassifier
from models.cnn import SampleCNN, build_net
from models.nets import MLP
from models.regression import CovidRegressor

__all__ = ["BaseTask", "CovidRegressor", "ImageClassifier", "MLP", "SampleCNN", "build_net"]
