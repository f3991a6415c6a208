"""HW13's student networks, the parameter count the course grades them by, and the knowledge-distillation loss.

The budget is torchsummary's "Total params" of the student at 3 x 224 x 224 (ML2022: at most 100,000; ML2023:
60,000), so `summary_params` counts as torchsummary does rather than `sum(p.numel())`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import DataError

#: The input size the course's graders give torchsummary: `summary(student_model, (3, 224, 224))`.
SUMMARY_INPUT = (3, 224, 224)


class StudentNet(nn.Module):
    """The course's sample StudentNet: 4 plain convolutions (no padding), BatchNorm, ReLU, max pooling, then global
    average pooling and one linear layer. `year` 2023: channels 4-16-64-84 (59,723 parameters); 2022: 32-32-64-100
    (87,907). Each is within its year's budget, and it is the simple baseline's network."""

    WIDTHS = {2022: (32, 32, 64, 100), 2023: (4, 16, 64, 84)}
    POOL_AFTER = {2022: (1, 2, 3), 2023: (1, 2, 3)}  # after which convolutions (0-based) a 2x max pooling follows

    def __init__(self, num_classes: int = 11, year: int = 2023) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip((3,) + self.WIDTHS[year], self.WIDTHS[year])):
            layers += [nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU()]
            if i in self.POOL_AFTER[year]:
                layers.append(nn.MaxPool2d(2, 2, 0))
        layers.append(nn.AdaptiveAvgPool2d((1, 1)))  # "Global Average Pooling for various input size"
        self.cnn = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(self.WIDTHS[year][-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.cnn(x).flatten(1))


def dwpw_conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """The sample's depthwise (3x3, one filter per channel) + pointwise (1x1) convolution, each with BatchNorm and
    ReLU: about 9/c_out + 1/9 of a 3x3 convolution's weights."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DwpwNet(nn.Module):
    """The hints' strong student: a 3x3 stem, then depthwise + pointwise blocks (MobileNet-style), global average
    pooling and a linear classifier. `width` scales every channel count (1.0: 56,467 parameters, within ML2023's
    60,000; the size/accuracy trade-off is `--model.width`)."""

    #: (output channels, stride) of the stem and of each depthwise + pointwise block
    STEM = (16, 2)
    BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (136, 2))

    def __init__(self, num_classes: int = 11, width: float = 1.0) -> None:
        super().__init__()
        scale = lambda c: max(4, int(round(c * width / 4)) * 4)  # noqa: E731  (channels in fours)
        c = scale(self.STEM[0])
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, self.STEM[1], 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        for channels, stride in self.BLOCKS:
            layers.append(dwpw_conv(c, scale(channels), stride))
            c = scale(channels)
        layers.append(nn.AdaptiveAvgPool2d((1, 1)))
        self.cnn = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Dropout(0.1), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.cnn(x).flatten(1))


#: The student networks by name, smallest first within each family.
STUDENTS = ("sample", "sample_2022", "dwpw")


def build_student(name: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """A student network by name: `sample` (ML2023's sample StudentNet), `sample_2022`, or `dwpw` (depthwise +
    pointwise, `width` times the channels)."""
    if width <= 0:
        raise DataError(f"--model.width must be positive (got {width})")
    if name == "dwpw":
        return DwpwNet(num_classes, width)
    if name in ("sample", "sample_2022"):
        if width != 1.0:
            raise DataError(f"--model.width {width}: the sample StudentNet is as written; use --model.net dwpw")
        return StudentNet(num_classes, 2022 if name == "sample_2022" else 2023)
    raise DataError(f"--model.net {name}: unknown student network; use one of {', '.join(STUDENTS)}")


def summary_params(net: nn.Module, input_size: tuple[int, ...] = SUMMARY_INPUT) -> int:
    """torchsummary's "Total params" of `net`: the `weight` and `bias` of every module its forward pass calls (each
    time it is called), except containers and the network itself; a forward pass on two random inputs of
    `input_size`, in eval mode (torchsummary's train-mode pass would move BatchNorm's running statistics).
    Written here because torchsummary only prints its table; tests/test_hw13.py checks the two agree."""
    total, hooks = 0, []

    def count(module, inputs, output):
        nonlocal total
        for name in ("weight", "bias"):
            tensor = getattr(module, name, None)
            if hasattr(tensor, "size"):
                total += math.prod(tensor.size())

    for module in net.modules():
        if module is not net and not isinstance(module, (nn.Sequential, nn.ModuleList)):
            hooks.append(module.register_forward_hook(count))
    was_training = net.training
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    try:
        net.eval()
        with torch.no_grad():
            net(torch.rand(2, *input_size, device=device))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
            alpha: float = 0.5, temperature: float = 1.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """The sample's `loss_fn_kd` (Hinton et al. 2015): alpha T^2 KL(p_teacher || p_student) + (1 - alpha) CE, with
    p = softmax(logits / T). T^2 keeps the soft targets' gradients as large as at T = 1. `labels` may be class
    indices or, after MixUp/CutMix, class probabilities."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits.float() / t, -1), F.log_softmax(teacher_logits.float() / t, -1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1 - alpha) * hard
