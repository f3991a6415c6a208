"""Image classification networks, always trained from scratch (the homework forbids pretrained weights)."""

import torchvision
from torch import nn

from datamodules.errors import DataError


class SampleCNN(nn.Module):
    """The official HW3 sample: 5 x (Conv3x3-BN-ReLU-MaxPool) 64->512, then FC 8192->1024->512->classes at 128 px."""

    def __init__(self, num_classes: int = 11, image_size: int = 128) -> None:
        super().__init__()
        widths = [3, 64, 128, 256, 512, 512]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2, 2, 0)]
        self.cnn = nn.Sequential(*layers)
        side = image_size // 32  # five 2x poolings: 128 px -> 4 x 4 x 512 = 8192 features
        self.fc = nn.Sequential(nn.Linear(512 * side * side, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(),
                                nn.Linear(512, num_classes))

    def forward(self, x):
        return self.fc(self.cnn(x).flatten(1))


def build_net(name: str, num_classes: int, image_size: int) -> nn.Module:
    """`sample` (the official CNN) or any torchvision classification model by name, with random weights."""
    if name == "sample":
        if image_size < 32:
            raise DataError(f"--model.net sample needs images of at least 32 px (got {image_size})")
        return SampleCNN(num_classes, image_size)
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise DataError(f"--model.net {name}: unknown network; use 'sample' or a torchvision model such as "
                        f"resnet18, resnet34, resnet50, efficientnet_b0, convnext_tiny ({len(available)} in all)")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
