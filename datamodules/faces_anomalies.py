"""Generated anomalies: normal images made abnormal in ways a face photo never is. Two users:

- the validation set (datamodules/faces.py): HW8's training set holds no anomalies, so held-out normal images
  and corrupted copies of them make a labelled set whose ROC AUC stands in for Kaggle's (a proxy: the real
  test anomalies are images of another distribution, not these corruptions);
- the boss hint's extra classifier (models/anomaly.py), trained to tell images from corrupted ones.

Each kind maps a batch of (N, 3, H, W) float images in [-1, 1] (the sample's normalisation) to as many
corrupted ones, drawing its randomness from `generator`, so a validation set is the same in every run.
"""

from collections.abc import Callable

import torch

Corruption = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator).to(device)


def noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise of a random strength (sigma 0.1-0.3 of the [-1, 1] range): the slide's "random noise"."""
    sigma = _uniform(len(x), 0.1, 0.3, generator, x.device).view(-1, 1, 1, 1)
    return (x + sigma * torch.randn(x.shape, generator=generator).to(x.device)).clamp(-1, 1)


def occlusion(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A flat rectangle of random colour, a quarter to a half of the image a side, covers part of it."""
    n, _, h, w = x.shape
    out = x.clone()
    sides = torch.randint(h // 4, h // 2 + 1, (n, 2), generator=generator)
    tops = (torch.rand(n, generator=generator) * (h - sides[:, 0] + 1)).long()
    lefts = (torch.rand(n, generator=generator) * (w - sides[:, 1] + 1)).long()
    colours = torch.rand(n, 3, generator=generator) * 2 - 1
    for i in range(n):  # (one slice per image: rectangles of different sizes)
        out[i, :, tops[i]:tops[i] + sides[i, 0], lefts[i]:lefts[i] + sides[i, 1]] = colours[i].view(3, 1, 1).to(x)
    return out


def upside_down(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The image turned upside down: every pixel plausible, the layout not."""
    return x.flip(-2)


def tiles(x: torch.Tensor, generator: torch.Generator, grid: int = 4) -> torch.Tensor:
    """The image cut into grid x grid tiles, shuffled: local statistics kept, the whole scrambled."""
    n, c, h, w = x.shape
    th, tw = h // grid, w // grid
    blocks = x[:, :, :th * grid, :tw * grid].reshape(n, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(n, grid * grid, c, th, tw)
    order = torch.argsort(torch.rand(n, grid * grid, generator=generator), dim=1).to(x.device)
    shuffled = blocks[torch.arange(n, device=x.device)[:, None], order]
    out = x.clone()
    out[:, :, :th * grid, :tw * grid] = shuffled.reshape(n, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(
        n, c, th * grid, tw * grid)
    return out


def channels(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Colour channels swapped (one of the five orders other than RGB): blue skin, orange sky."""
    orders = torch.tensor([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    chosen = orders[torch.randint(0, len(orders), (len(x),), generator=generator)].to(x.device)
    return torch.gather(x, 1, chosen.view(-1, 3, 1, 1).expand_as(x))


def blend(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Two different images of the batch averaged: a double exposure."""
    shift = int(torch.randint(1, max(2, len(x)), (1,), generator=generator)) if len(x) > 1 else 0
    return (x + x.roll(shift, 0)) / 2 if shift else x.flip(-1) * 0.5 + x * 0.5


#: every kind, by the name options use (`--data.val_anomalies`, `--model.classifier_anomalies`)
KINDS: dict[str, Corruption] = {"noise": noise, "occlusion": occlusion, "upside_down": upside_down,
                                "tiles": tiles, "channels": channels, "blend": blend}


def corrupt(x: torch.Tensor, kinds: torch.Tensor, names: list[str], generator: torch.Generator) -> torch.Tensor:
    """Image i corrupted by kind `names[kinds[i]]`, each kind applied to its images as one batch."""
    out = x.clone()
    for k, name in enumerate(names):
        chosen = (kinds == k).nonzero().flatten().to(x.device)
        if len(chosen):
            out[chosen] = KINDS[name](x[chosen], generator)
    return out
