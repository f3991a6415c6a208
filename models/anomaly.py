"""HW8: anomaly detection by reconstruction error, the sample's method, and the boss hint's extra classifier."""

from typing import Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from datamodules.errors import DataError
from datamodules.faces import AnomalyKind
from datamodules.faces_anomalies import corrupt
from datamodules.lab_hooks import Remedy
from models.autoencoders import DEFAULT_LATENT, VAE, OutlierClassifier, build_autoencoder, vae_loss
from models.base import BaseTask

#: the autoencoders from smallest to biggest, for "a bigger/smaller network"
NETS = ("fcn", "cnn", "resnet")
#: how fast the running mean and variance of the training images' scores follow (the classifier's combination)
MOMENTUM = 0.05


def ranked(scores: torch.Tensor) -> torch.Tensor:
    """Scores squashed into (0, 1) in the same order, for torchmetrics' AUROC: it passes scores outside [0, 1]
    through a sigmoid, which makes every reconstruction error above ~17 the same 1.0 (a ROC AUC of 0.5).
    Softsign in float64 keeps scores apart up to about 1e7."""
    scores = scores.double()
    return 0.5 + 0.5 * scores / (1 + scores.abs())


class AnomalyDetector(BaseTask):
    """An autoencoder trained to reconstruct the (all normal) training faces; an image's anomaly score is the root
    of its summed squared reconstruction error, as the sample computes it. `val_auroc` (ROC AUC on the built
    validation set, datamodules/faces.py) drives checkpointing and early stopping.

    With `classifier` (the slides' boss hint), a small CNN learns alongside to tell the training images from
    copies corrupted with `classifier_anomalies`; the score is then the reconstruction error plus
    `classifier_weight` times the classifier's logit, each standardised by its running mean and spread on the
    training images (one scale for both).

    Args:
        net: The autoencoder: fcn, cnn or vae (the sample's, as written) or resnet (deeper, residual).
        latent_dim: Size of the code: fcn and resnet, numbers (3 and 64 by default); cnn and vae, channels at
            8 x 8 (48). None: the net's default.
        width: resnet: channels of its first stage (the others 2x and 4x).
        classifier: Train the boss hint's extra classifier (normal vs corrupted images) and add its score.
        classifier_anomalies: The corruptions the classifier learns to see: noise, occlusion, upside_down, tiles,
            channels, blend.
        classifier_weight: Weight of the classifier's standardised logit in the score.
        optimizer: Optimizer class and its arguments.
        lr_scheduler: Learning-rate schedule; null for a constant lr.
    """

    monitor = "val_auroc"
    mode = "max"
    remedies = BaseTask.remedies + (
        Remedy("bias", "a deeper network", "--model.net", ladder=NETS),
        Remedy("bias", "a bigger code", "--model.latent_dim", times=2),
        Remedy("overfitting", "a smaller network", "--model.net", ladder=NETS, plus=-1),
        Remedy("overfitting", "a smaller code (a narrower bottleneck)", "--model.latent_dim", times=0.5),
    )

    def __init__(
        self,
        net: Literal["fcn", "cnn", "vae", "resnet"] = "resnet",
        latent_dim: int | None = None,
        width: int = 16,
        classifier: bool = False,
        classifier_anomalies: list[AnomalyKind] = ["noise", "occlusion"],  # noqa: B006 (copied, never changed)
        classifier_weight: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        latent_dim = DEFAULT_LATENT[net] if latent_dim is None else latent_dim
        if latent_dim < 1 or width < 1:
            raise DataError(f"--model.latent_dim and --model.width must be positive (got {latent_dim}, {width})")
        if classifier and not classifier_anomalies:
            raise DataError("--model.classifier true needs at least one kind in --model.classifier_anomalies")
        self.save_hyperparameters()
        self.save_hyperparameters({"latent_dim": latent_dim})  # resolved: the advisor's remedies scale it
        self.net = build_autoencoder(net, latent_dim, width)
        self.classifier = OutlierClassifier() if classifier else None
        self.kinds = list(dict.fromkeys(classifier_anomalies))
        # running mean and variance of the training images' reconstruction score and classifier logit
        self.register_buffer("score_stats", torch.tensor([0.0, 1.0, 0.0, 1.0]))
        self.train_loss = MeanMetric()
        self.train_classifier_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_auroc = BinaryAUROC()
        self.kind_auroc: nn.ModuleDict | None = None  # one AUROC per validation anomaly kind, made in `setup`

    def setup(self, stage: str) -> None:
        names = getattr(self.trainer.datamodule, "val_anomalies", None) if self._trainer else None
        if names and self.kind_auroc is None:
            self.kind_auroc = nn.ModuleDict({name: BinaryAUROC() for name in names}).to(self.device)

    # --- the model ---------------------------------------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(self.net, VAE) else out

    def reconstruction_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample's training loss, the mean squared error (the VAE's plus its KL divergence), and the
        reconstructions it was computed on (one pass of the network: its BatchNorm statistics move once, and the
        VAE's error is that of the code it trained on)."""
        if isinstance(self.net, VAE):
            recon, mu, logvar = self.net(x)
            return vae_loss(recon, x, mu, logvar), recon
        recon = self.net(x)
        return nn.functional.mse_loss(recon, x), recon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly scores of (B, 3, 64, 64) images in [-1, 1]: higher is more anomalous."""
        return self.score(x)[0]

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly scores, reconstructions). The sample's score: the root of the summed squared error."""
        recon = self.reconstruct(x)
        error = ((recon - x) ** 2).sum((1, 2, 3)).sqrt()
        if self.classifier is None:
            return error, recon
        mean_r, var_r, mean_c, var_c = self.score_stats
        logit = self.classifier(x)
        return ((error - mean_r) / var_r.sqrt().clamp(min=1e-6)
                + self.hparams.classifier_weight * (logit - mean_c) / var_c.sqrt().clamp(min=1e-6)), recon

    def classifier_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The extra classifier's loss on the batch and as many corrupted copies (binary cross-entropy), and its
        logits on the batch's own images."""
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # (from the seeded RNG)
        kinds = torch.randint(0, len(self.kinds), (len(x),), generator=generator)
        fakes = corrupt(x, kinds, self.kinds, generator)
        logits = self.classifier(torch.cat([x, fakes]))
        labels = torch.cat([torch.zeros(len(x)), torch.ones(len(x))]).to(logits)
        return nn.functional.binary_cross_entropy_with_logits(logits, labels), logits[:len(x)].detach()

    def batch_loss(self, batch) -> tuple[torch.Tensor, int]:
        """The training loss of one batch of images and its size (the lab's hook: datamodules/lab_hooks.py)."""
        loss = self.reconstruction_loss(batch)[0]
        if self.classifier is not None:
            loss = loss + self.classifier_loss(batch)[0]
        return loss, len(batch)

    # --- Lightning's steps ---------------------------------------------------------------------------
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, recon = self.reconstruction_loss(batch)
        # train_loss is the autoencoder's loss alone, as val_loss: the two compare (the course's diagnosis)
        self.train_loss.update(loss.detach(), weight=len(batch))
        self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
        if self.classifier is not None:
            bce, logits = self.classifier_loss(batch)
            self.train_classifier_loss.update(bce.detach(), weight=len(batch))
            self.log("classifier/train_loss", self.train_classifier_loss, on_step=False, on_epoch=True)
            loss = loss + bce
            self._track(((recon.detach() - batch) ** 2).sum((1, 2, 3)).sqrt(), logits)
        return loss

    @torch.no_grad()
    def _track(self, error: torch.Tensor, logits: torch.Tensor) -> None:
        """Running mean and variance of the normal training images' two scores."""
        batch = torch.stack([error.mean(), error.var(unbiased=False), logits.mean(), logits.var(unbiased=False)])
        self.score_stats.lerp_(batch.to(self.score_stats), MOMENTUM if self.global_step else 1.0)

    def validation_step(self, batch, batch_idx: int) -> dict:
        images, labels, kinds = batch
        scores, recon = self.score(images)
        normal = labels == 0
        self.val_loss.update(self.reconstruction_loss(images[normal])[0], weight=int(normal.sum()))
        self.val_auroc.update(ranked(scores), labels)
        self.log("val_loss", self.val_loss)  # the training loss on held-out normal images
        self.log("val_auroc", self.val_auroc, prog_bar=True)
        if self.kind_auroc is not None:
            names = self.trainer.datamodule.val_anomalies
            for k, name in enumerate(names):
                if (kinds == k).any():  # (a kind a small validation set lacks is not scored)
                    chosen = normal | (kinds == k)
                    self.kind_auroc[name].update(ranked(scores[chosen]), labels[chosen])
                    # kept out of the `val_*` learning-curve panel, as HW3's per-class accuracies
                    self.log(f"kind_auroc/{name}", self.kind_auroc[name])
        return {"scores": scores, "reconstructions": recon}

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self(batch)
