"""Runs that are a function of their seed: the same seed gives the same weights, and a resumed run the
weights of one that never stopped."""

import os
import random

import numpy as np
import pytorch_lightning as pl
import torch

from datamodules.base import EpochLoader, stream_seed


def _loaders(loaders):
    if isinstance(loaders, EpochLoader):
        yield loaders
    elif isinstance(loaders, dict):
        for loader in loaders.values():
            yield from _loaders(loader)
    elif isinstance(loaders, (list, tuple)):
        for loader in loaders:
            yield from _loaders(loader)


def rng_states() -> dict:
    """torch's, CUDA's, numpy's and Python's RNG states, in types `torch.load(weights_only=True)` reads back
    (Lightning's own collector keeps numpy's as an array, which it refuses)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                      cached], "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ReproducibleEpochs(pl.Callback):
    """Each training epoch starts from RNG states that depend only on (seed, epoch, rank), and a checkpoint
    carries the RNG states of the moment it was saved.

    With `datamodules.base.EpochLoader` (the data order and augmentation of an epoch depend on (seed,
    epoch) alone), what an epoch does no longer depends on the process's history: a run resumed from the
    end of epoch `e` trains epoch `e + 1` exactly as the uninterrupted run did, and one resumed from a
    mid-epoch checkpoint restores the RNG states saved with it (for dropout) before its next batch.
    The seed is the run's `--seed_everything` (nothing is reseeded when it is off).
    """

    def __init__(self) -> None:
        self._saved_states: dict | None = None
        self._loader_states: list[dict] = []
        self._trainer: pl.Trainer | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resuming mid-epoch: the loaders go on where the checkpoint was saved. (Lightning would restore them
        itself, but not when the loader was built before the checkpoint was loaded, as estimating the
        schedule's length does.)"""
        if self._loader_states:
            for loader, state in zip(_loaders(trainer.train_dataloader), self._loader_states):
                loader.load_state_dict(state)
            self._loader_states = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_states = None  # (Lightning skips this hook when it resumes mid-epoch)
        for loader in _loaders(trainer.train_dataloader):
            loader.set_epoch(trainer.current_epoch)
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything
        if seed is not None:
            epoch_seed = stream_seed(int(seed), trainer.current_epoch, trainer.global_rank)
            torch.manual_seed(epoch_seed)
            np.random.seed(epoch_seed % 2**32)
            random.seed(epoch_seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self._saved_states is not None:  # the first batch after resuming mid-epoch
            set_rng_states(self._saved_states)
            self._saved_states = None

    def state_dict(self) -> dict:
        loaders = [loader.state_dict() for loader in _loaders(self._trainer.train_dataloader)] if self._trainer else []
        return {"rng_states": rng_states(), "loaders": loaders}

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved_states = state_dict.get("rng_states")
        self._loader_states = state_dict.get("loaders", [])

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer  # (state_dict() is called without it)
