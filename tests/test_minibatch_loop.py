"""Several minibatches per Lightning step (HW1's default): same training as one per step, only faster."""
import math

import pytest
import torch

from datamodules.errors import DataError
from datamodules.base import MinibatchSampler, batch_loader
from homework.hw1 import main
from tests.conftest import QUIET


def test_sampler_groups_minibatches_and_covers_every_sample_once():
    sampler = MinibatchSampler(10, batch_size=4, shuffle=True, per_step=2)
    groups = list(sampler)
    assert len(sampler) == len(groups) == 2 and sampler.minibatches_per_epoch == 3
    assert [[len(b) for b in group] for group in groups] == [[4, 4], [2]]
    assert sorted(torch.cat([b for group in groups for b in group]).tolist()) == list(range(10))
    assert [len(b) for b in MinibatchSampler(10, 4, shuffle=False)] == [4, 4, 2]  # plain minibatches
    (whole,) = list(MinibatchSampler(3, 4, shuffle=False, per_step="epoch"))
    assert isinstance(whole, list) and whole[0].tolist() == [0, 1, 2]  # a list, even of one minibatch


def test_loader_yields_matching_rows_in_every_minibatch():
    x, y = torch.arange(10.0)[:, None].repeat(1, 3), torch.arange(10.0)
    (epoch,) = list(batch_loader(x, y, batch_size=4, shuffle=True, minibatches_per_step="epoch"))
    assert [len(b_y) for _, b_y in epoch] == [4, 4, 2]
    assert all(torch.equal(b_x[:, 0], b_y) for b_x, b_y in epoch)
    assert sorted(torch.cat([b_y for _, b_y in epoch]).tolist()) == y.tolist()


@pytest.mark.parametrize("per_step", [0, -1, "all"])
def test_bad_minibatches_per_step_is_a_data_error(per_step):
    with pytest.raises(DataError, match="minibatches_per_step"):
        MinibatchSampler(10, 4, shuffle=True, per_step=per_step)


SCHEDULERS = {
    "warmup-cosine, per step": ["--model.lr_scheduler", "callbacks.WarmupCosineLR",
                                "--model.lr_scheduler.warmup_steps", "0.3"],
    "step decay, per epoch": ["--model.lr_scheduler", "torch.optim.lr_scheduler.StepLR",
                              "--model.lr_scheduler.step_size", "1", "--model.lr_scheduler.gamma", "0.5"],
    "plateau, on val_mse": ["--model.lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau",
                            "--model.lr_scheduler.patience", "0", "--model.lr_scheduler.factor", "0.5",
                            "--model.lr_scheduler.threshold", "10"],  # "no real improvement": halve every epoch
}


@pytest.mark.parametrize("schedule", SCHEDULERS)
def test_a_whole_epoch_per_step_trains_exactly_like_one_minibatch_per_step(schedule):
    """Same seed, same shuffles: the model's own minibatch loop must give the same weights, learning rate,
    optimizer-step count and logged metrics as Lightning's automatic loop."""
    runs = {}
    for per_step in ("1", "epoch"):
        runs[per_step] = main(["fit", "--trainer.max_epochs", "3", *QUIET, "--data.batch_size", "64",
                               "--data.minibatches_per_step", per_step, "--seed_everything", "7",
                               "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.002",
                               "--model.optimizer.momentum", "0.9", *SCHEDULERS[schedule]])
    auto, grouped = runs["1"], runs["epoch"]
    assert auto.model.automatic_optimization and not grouped.model.automatic_optimization
    steps = 3 * math.ceil(len(auto.datamodule.train_x) / 64)
    assert auto.trainer.global_step == grouped.trainer.global_step == steps
    assert grouped.trainer.num_training_batches == 1
    for (name, a), (_, b) in zip(auto.model.named_parameters(), grouped.model.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    lrs = [run.model.optimizers().param_groups[0]["lr"] for run in (auto, grouped)]
    assert lrs[0] == pytest.approx(lrs[1]) and lrs[0] < 0.002  # the schedule moved, in both alike
    assert math.isfinite(float(auto.trainer.checkpoint_callback.best_model_score))  # trained, did not diverge
    for key in ("train_loss", "val_mse"):
        assert auto.trainer.callback_metrics[key].item() == pytest.approx(grouped.trainer.callback_metrics[key].item())


def test_max_steps_stops_inside_a_whole_epoch_step():
    cli = main(["fit", "--trainer.max_epochs", "3", "--trainer.max_steps", "5", *QUIET, "--data.batch_size", "64",
                "--data.minibatches_per_step", "epoch"])
    assert cli.trainer.global_step == 5 and 5 < math.ceil(len(cli.datamodule.train_x) / 64)
