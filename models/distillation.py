"""HW13: a small student classifier under the course's parameter budget, taught by a teacher (knowledge distillation).

The training logic only; the networks are in students.py, the teacher's loading in teacher.py.
"""

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from datamodules.compression import CompressionDataModule
from datamodules.errors import DataError
from datamodules.lab_hooks import ReferenceScore, Remedy
from models.base import BaseTask
from models.classifier import ImageClassifier
from models.demo_teacher import ensure_demo_teacher
from models.students import build_student, kd_loss, summary_params
from models.teacher import COURSE_TEACHER, Teacher, load_teacher

#: Student widths for "a bigger/smaller network" (within the budget or not: the budget check says).
WIDTHS = (0.5, 0.75, 1.0, 1.25)


def last_linear(net: nn.Module) -> nn.Linear:
    """The classifier layer: its input is the network's pooled features (what FitNet matches)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DataError(f"the {type(net).__name__} network has no linear classifier layer for FitNet to match")
    return linears[-1]


class Features:
    """Keeps the input of a network's classifier layer from its latest forward pass (a forward pre-hook)."""

    def __init__(self, net: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        last_linear(net).register_forward_pre_hook(self._keep)

    def _keep(self, module, inputs) -> None:
        self.value = inputs[0]


class Student(ImageClassifier):
    """A student network trained with cross entropy (`CE`, the simple baseline), knowledge distillation from a
    teacher (`KD`, the medium baseline: alpha T^2 KL(teacher || student) + (1 - alpha) CE), or KD plus FitNet's
    feature matching (`FitNet`: a linear adapter maps the student's pooled features onto the teacher's, and their
    mean squared error, weighted by `feature_weight`, is added).

    The teacher (`teacher`: a file or run directory; None: `resnet18_teacher.ckpt` beside the data) is loaded when a
    fit starts, scored once on the validation split, and runs without gradients in eval mode under the same
    precision; it is not part of the student's checkpoints, so `predict` needs only the student.

    Args:
        num_classes: Number of classes (filled in from the data).
        image_size: Input height and width in pixels (filled in from the data).
        net: The student: dwpw (depthwise + pointwise convolutions), sample (ML2023's StudentNet) or sample_2022.
        width: Channel multiplier of the dwpw student (its size: the budget line says the count).
        loss_fn_type: CE (cross entropy only), KD (knowledge distillation) or FitNet (KD + feature matching).
        alpha: KD: weight of the teacher's soft targets (1 - alpha: the labels' cross entropy).
        temperature: KD: softmax temperature T of both networks' logits.
        feature_weight: FitNet: weight of the feature-matching loss.
        teacher: The teacher: resnet18_teacher.ckpt, an HW3/HW13 checkpoint or run directory; None: the one
            beside the data.
        max_params: The parameter budget (torchsummary's Total params); None: the data's year (ML2022 100000,
            ML2023 60000).
        label_smoothing: Label smoothing of the cross-entropy term (0: none).
        optimizer: Optimizer class and its arguments, e.g. torch.optim.AdamW with lr and weight_decay.
        lr_scheduler: Learning-rate schedule, e.g. callbacks.WarmupCosineLR; null for a constant lr.
        from_data: Filled in from the data: the year's budget, the teacher file beside the data and its image size.
    """

    remedies = BaseTask.remedies + (
        Remedy("bias", "a wider student, if it fits the parameter budget (a fit over it is refused)", "--model.width",
               ladder=WIDTHS),
        Remedy("bias", "knowledge distillation", "--model.loss_fn_type", ladder=("CE", "KD")),
        Remedy("overfitting", "a narrower student", "--model.width", ladder=WIDTHS, plus=-1),
        Remedy("overfitting", "label smoothing", "--model.label_smoothing", plus=0.1, start=0.1, most=0.3),
    )

    #: `compare --losses CE,KD,FitNet`: the same student without a teacher, distilled, and with feature matching
    #: (homework/lab/compare.py; the teacher's accuracy is the table's ceiling).
    variants = {"--losses": {"CE": ("--model.loss_fn_type", "CE"), "KD": ("--model.loss_fn_type", "KD"),
                             "FitNet": ("--model.loss_fn_type", "FitNet")}}

    def __init__(
        self,
        num_classes: int = 11,
        image_size: int = 224,
        net: Literal["dwpw", "sample", "sample_2022"] = "dwpw",
        width: float = 1.0,
        loss_fn_type: Literal["CE", "KD", "FitNet"] = "KD",
        alpha: float = 0.5,
        temperature: float = 4.0,
        feature_weight: float = 1.0,
        teacher: str | None = None,
        max_params: int | None = None,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        from_data: dict | None = None,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise DataError(f"--model.alpha must be between 0 and 1 (got {alpha})")
        if temperature <= 0:
            raise DataError(f"--model.temperature must be positive (got {temperature})")
        if max_params is not None and max_params < 1:
            raise DataError(f"--model.max_params must be a positive number of parameters (got {max_params})")
        self._width = width  # (read by make_net, which HW3's __init__ calls)
        super().__init__(num_classes, image_size, net, label_smoothing, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["from_data"])  # (where the data lies is not the model's setting)
        self.from_data = from_data or {}
        self.parameter_count = summary_params(self.net)
        self.adapter: nn.Module | None = None  # FitNet's, made once the teacher's feature size is known
        self._teacher: Teacher | None = None  # (a plain attribute: not a submodule, so never trained or saved)
        self._features: tuple[Features, Features] | None = None
        self._checked = False

    def make_net(self, net: str, num_classes: int, image_size: int) -> nn.Module:
        return build_student(net, num_classes, self._width)

    # --- before training: the budget and the teacher ----------------------------------------
    @property
    def budget(self) -> int:
        return self.hparams.max_params or self.from_data.get("max_params") or 60_000

    def budget_line(self) -> str:
        """The student's size against its budget; DataError (one line) when it is over."""
        limit, count = self.budget, self.parameter_count
        source = ("--model.max_params" if self.hparams.max_params
                  else f"the {self.from_data.get('year', 'ML2023')} budget")
        if count > limit:
            raise DataError(f"the student ({self.hparams.net}, width {self.hparams.width:g}) has {count:,} parameters "
                            f"(torchsummary's Total params at 3x224x224), over {source} of {limit:,}: make it smaller "
                            f"(--model.width, --model.net) or pass --model.max_params N")
        return (f"Student {self.hparams.net} (width {self.hparams.width:g}): {count:,} parameters (torchsummary's "
                f"Total params at 3x224x224); {source}: {limit:,}, {limit - count:,} to spare")

    @property
    def teaches(self) -> bool:
        return self.hparams.loss_fn_type != "CE" or self.hparams.teacher is not None

    def load_teacher(self) -> Teacher | None:
        """The teacher named by `teacher`, else the course's file beside the data; None for CE without a teacher."""
        if not self.teaches:
            return None
        path = self.hparams.teacher or self.from_data.get("teacher_file")
        if path is None:
            raise DataError(f"--model.loss_fn_type {self.hparams.loss_fn_type} needs a teacher: put the course's "
                            f"{COURSE_TEACHER} beside the data, pass --model.teacher (a .ckpt file or an HW3 run "
                            f"directory), or train with --model.loss_fn_type CE")
        size = self.from_data.get("teacher_image_size") or 224
        if self.hparams.teacher is None and self.from_data.get("demo"):  # made from the demo images, once
            ensure_demo_teacher(Path(path), size, CompressionDataModule.decode_crop)
        return load_teacher(path, self.hparams.num_classes, size)

    def check_trainer(self, trainer) -> None:
        """Called by the CLI before `fit`, before any image is decoded: the budget line (or the refusal), and the
        teacher's file checked by loading it."""
        super().check_trainer(trainer)
        rank_zero_info(self.budget_line())
        self._teacher = self.load_teacher()
        self._checked = True

    def run_record(self) -> dict:
        """What run.json keeps about this student (homework/runs: the run record's hook)."""
        # `parameters`: the student's own, as the course counts them (FitNet's adapter trains too, but is no part of
        # the model that is handed in): what the advisor compares runs' sizes by
        return {"student_parameters": self.parameter_count, "parameters": self.parameter_count,
                "max_params": self.budget, "loss_fn_type": self.hparams.loss_fn_type}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        if not self._checked:  # (a fit not started by the CLI: Trainer.fit directly)
            self.check_trainer(self.trainer)
        if self._teacher is None:
            return
        datamodule = self.trainer.datamodule
        datamodule.teacher_view = self._teacher.image_size
        if self.hparams.loss_fn_type == "FitNet" and self.adapter is None:
            self._features = (Features(self.net), Features(self._teacher.net))
            self.adapter = nn.Linear(last_linear(self.net).in_features, last_linear(self._teacher.net).in_features)

    def on_fit_start(self) -> None:
        """The teacher on the student's device and dtype, scored once on the validation split."""
        if self._teacher is None:
            return
        dtype = next(self.net.parameters()).dtype
        self._teacher.net.to(self.device, dtype).eval().requires_grad_(False)
        accuracy, count = self.teacher_accuracy()
        datamodule = self.trainer.datamodule
        datamodule.teacher_reference = ReferenceScore(f"the teacher ({self._teacher.source})", "val_acc", accuracy,
                                                      ceiling=True)
        rank_zero_info(f"Teacher: {self._teacher.source}, {self._teacher.image_size} px: "
                       f"validation accuracy {accuracy:.4f} on {count:,} images "
                       f"(the student's ceiling)")

    def teacher_accuracy(self) -> tuple[float, int]:
        datamodule, correct, count = self.trainer.datamodule, 0, 0
        for batch in datamodule.val_dataloader():  # (scoring the teacher on the validation images)
            images, labels = datamodule.teacher_batch([t.to(self.device) for t in batch])
            with self.trainer.precision_plugin.forward_context():
                logits = self._teacher.logits(images.to(next(self.net.parameters()).dtype))
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
        return correct / max(count, 1), count

    # --- training -----------------------------------------------------------------------------
    def distillation_loss(self, images, labels, teacher_images) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss, the student's logits) of one training batch."""
        logits = self(images)
        if self._teacher is None or teacher_images is None or self.hparams.loss_fn_type == "CE":
            return self.loss(logits, labels), logits
        teacher_logits = self._teacher.logits(teacher_images)
        loss = kd_loss(logits, labels, teacher_logits, self.hparams.alpha, self.hparams.temperature,
                       self.hparams.label_smoothing)
        if self.adapter is not None:
            student_features, teacher_features = (f.value for f in self._features)
            loss = loss + self.hparams.feature_weight * F.mse_loss(self.adapter(student_features).float(),
                                                                   teacher_features.float())
        return loss, logits

    def training_step(self, batch, batch_idx):
        images, labels, teacher_images = (*batch, None) if len(batch) == 2 else batch
        loss, logits = self.distillation_loss(images, labels, teacher_images)
        self.train_acc.update(logits, labels if labels.dim() == 1 else labels.argmax(1))
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def batch_loss(self, batch) -> tuple[torch.Tensor, int]:
        """The loss training minimizes on one batch (the lab's hook): KD's where the batch carries a teacher's view."""
        images, labels, teacher_images = (*batch, None) if len(batch) == 2 else batch
        return self.distillation_loss(images, labels, teacher_images)[0], len(labels)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """FitNet's adapter only helps training: a model loaded to predict or validate leaves it out."""
        super().on_load_checkpoint(checkpoint)
        if self.adapter is None:
            for key in [k for k in checkpoint["state_dict"] if k.startswith("adapter.")]:
                del checkpoint["state_dict"][key]
