"""HW3: image classification (food-11) with a network chosen from config."""

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy

from datamodules.lab_hooks import Remedy
from models.base import BaseTask, ClassificationTask
from models.cnn import build_net


#: The networks from smallest to biggest, for "a bigger/smaller network" (any torchvision name also works).
NETS = ("sample", "resnet18", "resnet34", "resnet50")


class ImageClassifier(ClassificationTask):
    """Cross-entropy classifier; `val_acc` drives early stopping and checkpointing.

    `net`: `sample` (the official CNN) or a torchvision model name (`resnet18`, ...), built
    without pretrained weights. Targets may be class indices or, after MixUp/CutMix, class
    probabilities. `predict` returns class probabilities, per view when the batch carries
    test-time-augmented views (B, views, 3, H, W); the DataModule blends them.

    Args:
        num_classes: Number of classes (filled in from the data).
        image_size: Input height and width in pixels (filled in from the data).
        net: "sample" (the official CNN) or a torchvision model name such as resnet18, without pretrained weights.
        label_smoothing: Label smoothing of the cross-entropy loss (0: none).
        optimizer: Optimizer class and its arguments, e.g. torch.optim.AdamW with lr and weight_decay.
        lr_scheduler: Learning-rate schedule, e.g. callbacks.WarmupCosineLR; null for a constant lr.
    """

    remedies = BaseTask.remedies + (
        Remedy("bias", "a bigger network", "--model.net", ladder=NETS),
        Remedy("overfitting", "a smaller network", "--model.net", ladder=NETS, plus=-1),
        Remedy("overfitting", "label smoothing", "--model.label_smoothing", plus=0.1, start=0.1, most=0.3),
    )

    def __init__(
        self,
        num_classes: int = 11,
        image_size: int = 128,
        net: str = "resnet18",
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler, label_smoothing)
        self.save_hyperparameters()
        self.net = self.make_net(net, num_classes, image_size)
        self.val_class_acc = MulticlassAccuracy(num_classes, average="none")

    def make_net(self, net: str, num_classes: int, image_size: int) -> torch.nn.Module:
        """The network named `net` (a subclass trains its own family of networks the same way)."""
        return build_net(net, num_classes, image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.val_class_acc.update(out["preds"], batch[1])
        return out

    def on_validation_epoch_end(self) -> None:
        """Per-class accuracy, as `class_acc/<class>` (kept out of the `val_*` learning-curve panel)."""
        names = getattr(self.trainer.datamodule, "class_names", None) or range(self.hparams.num_classes)
        accuracy = self.val_class_acc.compute()
        self.log_dict({f"class_acc/{str(name).replace('/', '-')}": acc for name, acc in zip(names, accuracy)},
                      sync_dist=True)  # (equal in every process: compute() synced them)
        self.val_class_acc.reset()

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if x.dim() == 5:  # test-time augmentation: (B, views, 3, H, W)
            return self(x.flatten(0, 1)).softmax(-1).unflatten(0, x.shape[:2])
        return self(x).softmax(-1)
