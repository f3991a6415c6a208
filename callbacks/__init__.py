"""Callbacks and schedules shared by every homework (Lightning built-ins are used directly where they exist)."""
from callbacks.classification_plots import ClassificationPlots
from callbacks.finite import NonFiniteLoss, StopOnNonFiniteLoss
from callbacks.plots import LearningCurvePlot
from callbacks.schedulers import InverseSqrtLR, WarmupCosineLR
from callbacks.submission import KaggleSubmissionWriter, SubmissionError, validate_submission, write_atomically

__all__ = ["ClassificationPlots", "InverseSqrtLR", "KaggleSubmissionWriter", "LearningCurvePlot", "NonFiniteLoss",
           "StopOnNonFiniteLoss", "SubmissionError", "WarmupCosineLR", "validate_submission", "write_atomically"]
