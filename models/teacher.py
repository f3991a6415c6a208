"""HW13's teacher: the course's `resnet18_teacher.ckpt` (a torchvision ResNet-18 state dict, 11 classes), or a model
this project trained (an HW3 or HW13 checkpoint, or its run directory: "distil your own HW3 model").

The teacher is not a submodule of the student's LightningModule: it is not trained, not counted, not saved in the
student's checkpoints, and not needed to predict.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from datamodules.errors import DataError
from datamodules.workspace import home
from models.cnn import build_net
from models.students import build_student, summary_params

#: The course's teacher file, found beside the data.
COURSE_TEACHER = "resnet18_teacher.ckpt"


@dataclass
class Teacher:
    """A trained classifier that teaches: its network, the image size it was trained at, and what it is in words."""

    net: nn.Module
    image_size: int
    source: str  # "the course's ResNet-18 (data/hw13/food11-hw13/resnet18_teacher.ckpt)"

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Its logits, without gradients and in eval mode (BatchNorm's running statistics, no dropout)."""
        self.net.eval()
        return self.net(images.to(next(self.net.parameters()).dtype))


def find_checkpoint(path: Path) -> Path:
    """A run directory's best checkpoint (its run.json names it), else its last; a file stays itself.
    (run.json is read here, not through homework.runs: models sit below the run machinery.)"""
    if not path.is_dir():
        return path
    record_file = path / "run.json"
    if not record_file.is_file():
        raise DataError(f"--model.teacher {path}: this folder is not a run directory (it holds no run.json); pass "
                        f"a run directory of `fit`, a .ckpt file or {COURSE_TEACHER}")
    try:
        best = json.loads(record_file.read_text()).get("best_checkpoint")
    except ValueError:
        best = None
    for candidate in ([path / best] if best else []) + [path / "checkpoints" / "last.ckpt"]:
        if candidate.is_file():
            return candidate
    raise DataError(f"--model.teacher {path}: this run saved no checkpoint yet")


def resolve(path: str | Path) -> Path:
    """A path as typed; a relative one that is not there is also looked for under the project's home (where
    `runs/` lives when $NTU_ML_HOME is set)."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute() or not (home() / given).exists():
        return given
    return home() / given


def load_teacher(path: str | Path, num_classes: int, image_size: int) -> Teacher:
    """The teacher in `path`: a state dict of torchvision's ResNet-18 (the course's file; trained at `image_size`),
    or a Lightning checkpoint (or run directory) of this project's HW3 or HW13 (at the size it was trained at).
    Anything else is one DataError line naming the file and what was expected."""
    given = resolve(path)
    if not given.exists():
        raise DataError(f"--model.teacher {path}: no such file or run directory")
    file = find_checkpoint(given)
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and unsupported-type errors alike: not a file torch.save wrote
        raise DataError(f"{file}: not a PyTorch state dict or checkpoint (torch.load: {type(err).__name__}); expected "
                        f"a ResNet-18 state dict like the course's {COURSE_TEACHER}, "
                        f"or a checkpoint of this project") from None
    if not isinstance(saved, dict):
        raise DataError(f"{file}: holds a {type(saved).__name__}, not a state dict (expected a ResNet-18 state dict "
                        f"for {num_classes} classes, as the course's {COURSE_TEACHER}, "
                        f"or a checkpoint of this project)")
    if "state_dict" in saved and "hyper_parameters" in saved:
        return _from_checkpoint(file, saved, num_classes)
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    _load(net, saved, file, "a torchvision ResNet-18 state dict", num_classes)
    return Teacher(net, image_size, f"ResNet-18, {summary_params(net, (3, image_size, image_size)):,} parameters "
                                    f"({file})")


def _from_checkpoint(file: Path, checkpoint: dict, num_classes: int) -> Teacher:
    """An HW3 classifier (`net`: sample or a torchvision name) or an HW13 student (a teacher assistant)."""
    homework, hparams = checkpoint.get("homework"), checkpoint["hyper_parameters"]
    if homework not in ("hw3", "hw13") or "net" not in hparams or "image_size" not in hparams:
        raise DataError(f"{file}: a checkpoint of {homework or 'another model'}, not of an image classifier of HW3 "
                        f"or HW13 (expected an HW3 run, an HW13 run or the course's {COURSE_TEACHER})")
    classes = hparams.get("num_classes")
    if classes != num_classes:
        raise DataError(f"{file}: a classifier of {classes} classes; the teacher must have {num_classes}")
    if homework == "hw3":
        net, what = build_net(hparams["net"], num_classes, hparams["image_size"]), f"HW3's {hparams['net']}"
    else:
        net = build_student(hparams["net"], num_classes, hparams.get("width", 1.0))
        what = f"HW13's student {hparams['net']}"
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    _load(net, weights, file, f"{what}'s weights", num_classes)
    size = int(hparams["image_size"])
    return Teacher(net, size, f"{what}, {summary_params(net, (3, size, size)):,} parameters ({file})")


def _load(net: nn.Module, weights: dict, file: Path, expected: str, num_classes: int) -> None:
    """Load `weights` into `net`, or one line saying how they do not fit."""
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        sample = ", ".join((missing or unexpected)[:3])
        raise DataError(f"{file}: not {expected} ({len(missing)} of its tensors missing, {len(unexpected)} unknown "
                        f"ones, e.g. {sample}); another architecture?")
    for key, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != own[key].shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            if key.endswith("fc.weight") and isinstance(tensor, torch.Tensor) and tensor.dim() == 2:
                raise DataError(f"{file}: a classifier of {tensor.shape[0]} classes; the teacher must have "
                                f"{num_classes}")
            raise DataError(f"{file}: {key} has shape {shape}, expected {tuple(own[key].shape)} ({expected})")
    net.load_state_dict(weights)
