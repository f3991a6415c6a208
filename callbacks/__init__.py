"""Callbacks and schedules shared by every homework (Lightning built-ins are used directly where they exist)."""
from callbacks.checkpointing import AtomicCheckpointIO, HomeworkCheckpoint
from callbacks.classification_plots import ClassificationPlots
from callbacks.finite import NonFiniteLoss, StopOnNonFiniteLoss
from callbacks.interrupt import StopOnCtrlC, launched_processes_ignore_ctrl_c
from callbacks.plots import LearningCurvePlot
from callbacks.pruning import OptunaPruning
from callbacks.reproducibility import ReproducibleEpochs
from callbacks.schedulers import InverseSqrtLR, WarmupCosineLR
from callbacks.submission import KaggleSubmissionWriter, SubmissionError, validate_submission, write_submission

__all__ = ["AtomicCheckpointIO", "ClassificationPlots", "HomeworkCheckpoint", "InverseSqrtLR", "KaggleSubmissionWriter",
           "LearningCurvePlot", "NonFiniteLoss", "OptunaPruning", "ReproducibleEpochs", "StopOnCtrlC",
           "StopOnNonFiniteLoss", "SubmissionError", "WarmupCosineLR", "launched_processes_ignore_ctrl_c",
           "validate_submission", "write_submission"]
