"""HW11: domain-adversarial training (DaNN, Ganin et al. 2016) of the sample's feature extractor, label
predictor and domain classifier, and the label-free scores that pick its checkpoint."""

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import CatMetric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from datamodules.errors import DataError
from datamodules.lab_hooks import Remedy
from models.base import BaseTask


class FeatureExtractor(nn.Module):
    """The sample's VGG-like extractor: five conv-BN-ReLU-maxpool blocks, 32x32x1 -> (8 width) features
    (the sample's width 64: 512 features, 2.1M parameters)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        channels = [1, width, 2 * width, 4 * width, 4 * width, 8 * width]
        self.conv = nn.Sequential(*[layer for c_in, c_out in zip(channels, channels[1:]) for layer in (
            nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))])
        self.out_features = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)  # (the sample's .squeeze() also drops the batch axis of a batch of one)


class LabelPredictor(nn.Module):
    """The sample's label predictor: features -> hidden -> hidden -> classes."""

    def __init__(self, in_features: int = 512, num_classes: int = 10) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(in_features, in_features), nn.ReLU(),
                                   nn.Linear(in_features, in_features), nn.ReLU(),
                                   nn.Linear(in_features, num_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h)


class DomainClassifier(nn.Module):
    """The sample's domain classifier: four Linear-BN-ReLU layers, then one logit (source: 1, target: 0)."""

    def __init__(self, in_features: int = 512) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[layer for _ in range(4) for layer in (
            nn.Linear(in_features, in_features), nn.BatchNorm1d(in_features), nn.ReLU())],
            nn.Linear(in_features, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h).squeeze(-1)


class GradientReversal(torch.autograd.Function):
    """The identity going forward; going back, the gradient times -lambda (DANN's gradient reversal layer).

    Why this and not the sample's two optimizer steps (Lightning's manual optimization): one backward pass
    trains all three networks at once, the domain classifier to tell the domains apart and the feature
    extractor (through the reversed gradient) to make them alike, so Lightning's automatic optimization keeps
    gradient clipping, accumulation, mixed precision and the learning-rate schedules, and a step costs one
    forward and one backward instead of the sample's two backward passes.
    """

    generate_vmap_rule = True  # (torch.func transforms, e.g. `critical`'s Hessian-vector products)

    @staticmethod
    def forward(x: torch.Tensor, lamb: float) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.lamb = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lamb * grad, None

    @staticmethod
    def jvp(ctx, x_tangent: torch.Tensor, lamb_tangent) -> torch.Tensor:
        return x_tangent  # forward mode: the identity


def reverse_gradient(x: torch.Tensor, lamb: float) -> torch.Tensor:
    return GradientReversal.apply(x, lamb)


def dann_lambda(progress: float, lamb: float = 1.0, gamma: float = 10.0) -> float:
    """The DANN paper's schedule: `lamb` x (2 / (1 + exp(-gamma p)) - 1) at progress p in [0, 1] of training,
    0 at the start (the domain classifier's signal is noise while the features are), near `lamb` from p ~ 0.5."""
    return lamb * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


class DomainAdversarialClassifier(BaseTask):
    """Classifies photos (source, labelled) and learns features in which the drawings (target) look alike.

    Each step: class cross-entropy on the photos + the domain classifier's binary cross-entropy on photos and
    drawings, its gradient reversed into the feature extractor (times lambda). lambda 0 is source-only
    training with the same networks (the domain classifier then only watches). `pseudo_label_threshold` adds
    the cross-entropy of drawings predicted at least that confidently, with their predicted class (a boss
    route), from `pseudo_label_start` of training on.

    The checkpoint is picked without target labels (docs/hw11.md): by `val_score`, the mean of the photos'
    validation accuracy and the information maximisation of the drawings' predictions (confident for each
    drawing, and all classes used, as the classes of the balanced target set are).

    Args:
        num_classes: Number of classes (filled in from the data).
        width: Channels of the extractor's first layer (filled in from the data's net_width).
        lamb: Weight of the adversarial domain loss (the sample's `lamb`): its final value under the dann schedule.
        lamb_schedule: dann: 0 rising to `lamb` (2 / (1 + exp(-gamma p)) - 1 over training); constant: `lamb`
            throughout.
        gamma: Steepness of the dann schedule (the paper's 10).
        label_smoothing: Label smoothing of the class loss on the photos.
        pseudo_label_threshold: Train on drawings predicted with at least this probability, as their predicted
            class (e.g. 0.95); null: off.
        pseudo_label_weight: Weight of the pseudo-label loss.
        pseudo_label_start: Share of training after which pseudo-labels are used (the features align first).
        optimizer: Optimizer class and its arguments (the sample: Adam, lr 0.001).
        lr_scheduler: Learning-rate schedule; null for a constant lr.
    """

    monitor = "val_score"
    mode = "max"
    remedies = BaseTask.remedies + (
        Remedy("overfitting", "label smoothing", "--model.label_smoothing", plus=0.1, start=0.1, most=0.3),
    )

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 64,
        lamb: float = 1.0,
        lamb_schedule: Literal["dann", "constant"] = "dann",
        gamma: float = 10.0,
        label_smoothing: float = 0.0,
        pseudo_label_threshold: float | None = None,
        pseudo_label_weight: float = 1.0,
        pseudo_label_start: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        self.save_hyperparameters()
        self.feature_extractor = FeatureExtractor(width)
        self.label_predictor = LabelPredictor(self.feature_extractor.out_features, num_classes)
        self.domain_classifier = DomainClassifier(self.feature_extractor.out_features)
        self.class_criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_target_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=-1)
        self.val_source_domain_acc, self.val_target_domain_acc = BinaryAccuracy(), BinaryAccuracy()
        self.val_target_probs = CatMetric()  # the drawings' predictions: their entropy and their mean's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of images (B, 1, 32, 32)."""
        return self.label_predictor(self.feature_extractor(x))

    def check_trainer(self, trainer) -> None:
        for name in ("lamb", "gamma", "pseudo_label_weight"):
            if self.hparams[name] < 0:
                raise DataError(f"--model.{name} must be at least 0 (got {self.hparams[name]})")
        threshold = self.hparams.pseudo_label_threshold
        if threshold is not None and not 0 < threshold <= 1:
            raise DataError(f"--model.pseudo_label_threshold must be in (0, 1] (got {threshold})")

    # --- the adversarial game --------------------------------------------------------------------
    def progress(self) -> float:
        """How far training is, 0 -> 1 (the DANN schedule's p)."""
        total = self.trainer.estimated_stepping_batches
        return min(1.0, self.global_step / total) if total and math.isfinite(total) else 0.0

    def current_lambda(self) -> float:
        if self.hparams.lamb_schedule == "constant":
            return self.hparams.lamb
        return dann_lambda(self.progress(), self.hparams.lamb, self.hparams.gamma)

    def losses(self, batch, lamb: float, pseudo_threshold: float | None = None) -> dict[str, torch.Tensor]:
        """The class loss on the photos, the domain loss (its gradient reversed into the features) and, with a
        threshold, the pseudo-label loss on the drawings; also the photos' logits."""
        (source, labels), target = batch["source"], batch["target"]
        # one batch of both domains, as the sample mixes them: BatchNorm's statistics then span both
        features = self.feature_extractor(torch.cat([source, target]))
        logits = self.label_predictor(features)
        source_logits, target_logits = logits[:len(source)], logits[len(source):]
        domain = torch.cat([torch.ones(len(source)), torch.zeros(len(target))]).to(features)
        domain_logits = self.domain_classifier(reverse_gradient(features, lamb))
        out = {"class": self.class_criterion(source_logits, labels),
               "domain": F.binary_cross_entropy_with_logits(domain_logits, domain), "source_logits": source_logits}
        if pseudo_threshold is not None:
            confidence, pseudo = target_logits.detach().softmax(-1).max(-1)
            mask = (confidence >= pseudo_threshold).float()  # FixMatch's masked mean over the whole batch
            out["pseudo"] = (F.cross_entropy(target_logits, pseudo, reduction="none") * mask).mean()
            out["pseudo_share"] = mask.mean()
        return out

    def training_step(self, batch, batch_idx):
        lamb = self.current_lambda()
        hp = self.hparams
        use_pseudo = hp.pseudo_label_threshold is not None and self.progress() >= hp.pseudo_label_start
        out = self.losses(batch, lamb, hp.pseudo_label_threshold if use_pseudo else None)
        # the domain classifier minimizes its loss; the reversal makes the extractor maximize it, times lambda
        loss = out["class"] + out["domain"] + hp.pseudo_label_weight * out.get("pseudo", 0.0)
        labels = batch["source"][1]
        self.train_acc.update(out["source_logits"], labels)
        size = len(labels)
        self.log("train_loss", out["class"], on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("train_domain_bce", out["domain"], on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("lambda", lamb, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        if "pseudo" in out:
            self.log("train_pseudo_share", out["pseudo_share"], on_step=False, on_epoch=True, batch_size=size,
                     sync_dist=True)
        return loss

    def batch_loss(self, batch) -> tuple[torch.Tensor, int]:
        """The photos' class loss on one batch and their number (the lab's hook: datamodules/lab_hooks.py). The
        adversarial game has no one loss that every parameter minimizes (the domain classifier and the extractor
        pull its domain term opposite ways), so `critical` looks at the labelled part, which both the
        extractor and the label predictor minimize."""
        if isinstance(batch, tuple) and len(batch) == 3 and isinstance(batch[0], dict):  # a CombinedLoader's item
            batch = batch[0]
        images, labels = batch["source"]
        return self.class_criterion(self(images), labels), len(labels)

    # --- validation without target labels --------------------------------------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        images, labels = batch
        features = self.feature_extractor(images)
        logits = self.label_predictor(features)
        domain_pred = self.domain_classifier(features) > 0  # True: "a photo"
        if dataloader_idx == 0:  # held-out photos
            self.val_acc.update(logits, labels)
            self.val_source_domain_acc.update(domain_pred, torch.ones_like(labels))
            self.log("val_loss", self.class_criterion(logits, labels), batch_size=len(labels),
                     add_dataloader_idx=False, sync_dist=True)
            return
        probs = logits.softmax(-1)  # drawings: labels only where a labelled copy was given (else -1)
        self.val_target_domain_acc.update(domain_pred, torch.zeros_like(labels))
        self.val_target_probs.update(probs)
        if (labels >= 0).any():
            self.val_target_acc.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        log_classes = math.log(self.hparams.num_classes)
        if self.val_target_probs.update_count == 0 or self.val_acc.update_count == 0:  # (a loader cut short)
            return
        probs = self.val_target_probs.compute()

        def normalized_entropy(p: torch.Tensor) -> torch.Tensor:
            return -(p * p.clamp_min(1e-12).log()).sum(-1) / log_classes  # 0..1

        entropy, diversity = normalized_entropy(probs).mean(), normalized_entropy(probs.mean(0))
        information = diversity - entropy  # mutual information of drawing and predicted class, 0..1
        source_acc = self.val_acc.compute()
        domain_acc = (self.val_source_domain_acc.compute() + self.val_target_domain_acc.compute()) / 2
        metrics = {"val_acc": source_acc, "val_domain_acc": domain_acc, "val_target_entropy": entropy,
                   "val_target_information": information, "val_score": (source_acc + information) / 2}
        if self.val_target_acc.update_count:
            metrics["val_target_acc"] = self.val_target_acc.compute()
        self.log_dict(metrics, sync_dist=True)  # (equal in every process: compute() synced them)
        for metric in (self.val_acc, self.val_target_acc, self.val_source_domain_acc, self.val_target_domain_acc,
                       self.val_target_probs):
            metric.reset()

    def predict_step(self, batch, batch_idx):
        return self(batch[0] if isinstance(batch, (list, tuple)) else batch).softmax(-1)
