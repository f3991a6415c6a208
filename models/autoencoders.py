"""HW8's networks, apart from the training logic (models/anomaly.py): the course sample's three autoencoders as
written (fcn, cnn, vae), the deeper ResNet-style one the slides' medium/boss hints point to, and the boss hint's
extra classifier. Images are (B, 3, 64, 64) in [-1, 1]; every decoder ends in Tanh, as the sample's."""

import torch
from torch import nn


class FCNAutoencoder(nn.Module):
    """The sample's `fcn_autoencoder`: 12288-128-64-12-3 and back, on the flattened image (the code: 3 numbers)."""

    def __init__(self, latent_dim: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64 * 64 * 3, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                     nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, 12), nn.ReLU(), nn.Linear(12, 64), nn.ReLU(),
                                     nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64 * 64 * 3), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x.flatten(1))).view_as(x)  # (the sample's img.view(B, -1))


class ConvAutoencoder(nn.Module):
    """The sample's `conv_autoencoder`: three stride-2 4x4 convolutions 3-12-24-48 (the code: 48 x 8 x 8) and
    three transposed ones back."""

    def __init__(self, latent_dim: int = 48) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 12, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(12, 24, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(24, latent_dim, 4, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(latent_dim, 24, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(24, 12, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(12, 3, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class VAE(nn.Module):
    """The sample's `VAE`: the conv autoencoder whose last encoder layer is two heads, the mean and log-variance
    of a 48 x 8 x 8 code (each behind a ReLU, as in the sample), sampled while training. `forward` returns
    (reconstruction, mu, logvar); at evaluation it decodes the mean (the sample draws z at test time too, so its
    scores change from run to run)."""

    def __init__(self, latent_dim: int = 48) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 12, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(12, 24, 4, stride=2, padding=1), nn.ReLU())
        self.enc_out_1 = nn.Sequential(nn.Conv2d(24, latent_dim, 4, stride=2, padding=1), nn.ReLU())
        self.enc_out_2 = nn.Sequential(nn.Conv2d(24, latent_dim, 4, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(latent_dim, 24, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(24, 12, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(12, 3, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        mu, logvar = self.enc_out_1(hidden), self.enc_out_2(hidden)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decoder(z), mu, logvar


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The sample's `loss_vae`: the mean squared error plus the KL divergence summed over the batch and code."""
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return nn.functional.mse_loss(recon, x) + kld


class ResBlock(nn.Module):
    """A ResNet basic block (two 3x3 convolutions, BatchNorm, a shortcut); `scale` 2 halves the image (stride 2),
    0.5 doubles it (nearest upsampling first), 1 keeps it."""

    def __init__(self, c_in: int, c_out: int, scale: float = 1) -> None:
        super().__init__()
        stride = 2 if scale == 2 else 1
        self.resize = nn.Upsample(scale_factor=2, mode="nearest") if scale == 0.5 else nn.Identity()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Identity() if c_in == c_out and stride == 1 else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(x)
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetAutoencoder(nn.Module):
    """A deeper convolutional autoencoder (the slides' "adjust model structure" / "ResNet as encoder"): a stride-2
    stem as the sample's first layer, three residual stages down to 4 x 4, a fully connected code of `latent_dim`
    numbers (a narrow bottleneck: what cannot pass it, an anomaly, comes back badly), and the mirror image up to
    64 x 64. About 6x the sample cnn's arithmetic per image."""

    def __init__(self, latent_dim: int = 64, width: int = 16) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 4 * width]
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w[0], 4, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(),  # 32 px
            *(ResBlock(a, b, scale=2) for a, b in zip(w, w[1:])),  # 16, 8, 4 px
            nn.Flatten(), nn.Linear(w[3] * 16, latent_dim))
        self.expand = nn.Sequential(nn.Linear(latent_dim, w[3] * 16), nn.ReLU())
        self.decoder = nn.Sequential(*(ResBlock(a, b, scale=0.5) for a, b in zip(w[::-1], w[::-1][1:])),  # 8-32 px
                                     nn.ConvTranspose2d(w[0], 3, 4, 2, 1), nn.Tanh())  # 64 px
        self.bottom = w[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encoder(x)
        return self.decoder(self.expand(code).view(len(x), self.bottom, 4, 4))


class OutlierClassifier(nn.Module):
    """The boss hint's extra classifier: a small CNN whose logit says "corrupted" (trained on the training
    images and corrupted copies of them, models/anomaly.py)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(w, w[1:]):
            layers += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


#: each net's default code size: the sample's for fcn (3 numbers) and cnn/vae (48 channels at 8 x 8)
DEFAULT_LATENT = {"fcn": 3, "cnn": 48, "vae": 48, "resnet": 64}


def build_autoencoder(net: str, latent_dim: int, width: int) -> nn.Module:
    if net == "fcn":
        return FCNAutoencoder(latent_dim)
    if net == "cnn":
        return ConvAutoencoder(latent_dim)
    if net == "vae":
        return VAE(latent_dim)
    return ResNetAutoencoder(latent_dim, width)
