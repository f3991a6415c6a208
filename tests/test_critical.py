"""Critical-point analysis: verdicts and eigenvalues on functions with known answers, the module path
against the full spectrum, and a trained HW1 checkpoint."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from datamodules.errors import DataError
from datamodules.covid import CovidDataModule
from homework.cli.main import HomeworkCLI
from homework.lab.critical import (LOCAL_MINIMUM, NOT_CRITICAL, SADDLE_POINT, analyze_function, analyze_module,
                               critical_command, format_report, run_critical, training_batches)
from homework.hw1 import main as hw1
from models.regression import CovidRegressor
from tests.conftest import QUIET, user_error

f64 = torch.float64


def rotated_quadratic(eigenvalues: list[float], seed: int = 0):
    """½ θᵀHθ with H = Q diag(eigenvalues) Qᵀ for a random rotation Q: the origin is its critical point."""
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=f64,
                                       generator=torch.Generator().manual_seed(seed)))
    hessian = q @ torch.diag(torch.tensor(eigenvalues, dtype=f64)) @ q.T
    return lambda theta: 0.5 * theta @ hessian @ theta


def test_quadratic_bowl_is_a_local_minimum_with_its_eigenvalues():
    report = analyze_function(rotated_quadratic([0.5, 1, 2, 3, 4, 7]), torch.zeros(6, dtype=f64), top_k=2)
    assert report.verdict == LOCAL_MINIMUM and report.method == "full Hessian"
    assert report.grad_norm == 0 and report.loss == 0
    np.testing.assert_allclose(report.largest, [7, 4])
    np.testing.assert_allclose(report.smallest, [0.5, 1])
    assert report.minimum_ratio == 1.0 and report.counts == (6, 0, 0)
    assert "looks like a local minimum" in format_report(report)


def test_saddle_x2_minus_y2_at_the_origin():
    report = analyze_function(lambda p: p[0] ** 2 - p[1] ** 2, torch.zeros(2, dtype=f64))
    assert report.verdict == SADDLE_POINT
    assert report.largest == pytest.approx([2.0]) and report.smallest == pytest.approx([-2.0])
    assert report.minimum_ratio == 0.5
    # the escape direction is ±y, along which the loss goes down
    np.testing.assert_allclose(np.abs(report.escape_direction), [0, 1], atol=1e-12)
    text = format_report(report)
    assert "minimum ratio  0.500" in text and "Verdict: saddle point" in text and "escape along it" in text


def test_away_from_the_critical_point_is_not_critical():
    report = analyze_function(rotated_quadratic([1, 3]), torch.ones(2, dtype=f64))
    assert report.verdict == NOT_CRITICAL
    assert report.grad_norm > 1 and report.gradient_decrease > 0.1 * report.loss
    assert report.smallest == pytest.approx([1.0]) and report.largest == pytest.approx([3.0])
    assert "not at a critical point" in format_report(report)
    # ... and, close enough to the minimum, a tiny gradient counts as critical
    assert analyze_function(rotated_quadratic([1, 3]), torch.full((2,), 1e-9, dtype=f64)).verdict == LOCAL_MINIMUM


def test_lanczos_finds_both_ends_of_a_large_spectrum():
    """Over the full-spectrum limit, without materialising the 4,000 x 4,000 Hessian."""
    n = 4000
    eigenvalues = torch.cat([torch.tensor([-1.0, -0.5]), torch.linspace(0.1, 1, n - 4), torch.tensor([5.0, 10.0])])
    eigenvalues = eigenvalues.to(f64)[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    report = analyze_function(lambda p: 0.5 * (eigenvalues * p * p).sum(), torch.zeros(n, dtype=f64), top_k=2)
    assert report.method == "Lanczos" and report.converged and report.spectrum is None
    assert report.hvps < 400  # matrix-free: a few hundred products, not n
    np.testing.assert_allclose(report.largest, [10, 5], rtol=1e-6)
    np.testing.assert_allclose(report.smallest, [-1, -0.5], atol=1e-4)
    assert report.verdict == SADDLE_POINT and report.minimum_ratio is None
    assert np.argmax(np.abs(report.escape_direction)) == int(torch.argmin(eigenvalues))
    assert "minimum ratio  not computed" in format_report(report)


class TwoWeights(nn.Module):
    """The lecture's y = w₁·w₂·x: the origin is a saddle point of its squared error."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w1 * self.w2 * x


def test_module_path_finds_the_lectures_saddle_and_leaves_the_model_alone():
    model = TwoWeights().train()
    x, y = torch.tensor([1.0]), torch.tensor([1.0])
    report = analyze_module(model, [(x, y)], batch_loss=lambda m, b: (((m(b[0]) - b[1]) ** 2).mean(), 1))
    # L = (w1 w2 - 1)²: at the origin H = [[0, -2], [-2, 0]]
    assert report.verdict == SADDLE_POINT and report.minimum_ratio == 0.5
    assert report.largest == pytest.approx([2.0]) and report.smallest == pytest.approx([-2.0])
    assert report.escape_parameter in ("w1", "w2")
    assert model.training and model.w1.dtype == torch.float32  # analysed on a float64, eval-mode copy


def tiny_regressor_batches(seed: int = 0):
    torch.manual_seed(seed)
    model = CovidRegressor(in_features=5, hidden_dims=[6, 4])
    x = torch.randn(40, 5)
    y = x @ torch.randn(5) + 0.1 * torch.randn(40)
    return model, [(x[:16], y[:16]), (x[16:], y[16:])]  # unequal batches: the loss is the mean per example


def test_module_lanczos_extremes_match_the_full_spectrum():
    model, batches = tiny_regressor_batches()
    full = analyze_module(model, batches, top_k=2)
    lanczos = analyze_module(model, batches, top_k=2, max_full_params=0)
    assert full.method == "full Hessian" and lanczos.method == "Lanczos" and full.num_params == 36 + 28 + 5
    np.testing.assert_allclose(lanczos.largest, full.largest, rtol=1e-4)
    np.testing.assert_allclose(lanczos.smallest, full.smallest, atol=1e-4 * full.largest[0])
    assert full.spectrum[0] == pytest.approx(full.smallest[0]) and len(full.spectrum) == full.num_params
    # the loss is the mean squared error over all 40 examples, not the mean of the two batches' means
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        assert full.loss == pytest.approx(float(((model(x) - y) ** 2).mean()), rel=1e-5)
    assert full.examples == 40 and full.batches == 2


def test_hw1_checkpoint_end_to_end():
    """A model trained by `fit`, analysed on its training split: the loss and gradient are the real ones."""
    cli = hw1(["fit", "--trainer.max_epochs", "3", "--model.hidden_dims", "[8]", *QUIET])
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    model = CovidRegressor.load_from_checkpoint(best, map_location="cpu")
    saved = torch.load(best, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    datamodule = CovidDataModule(**{k: v for k, v in saved.items() if not k.startswith("_")})
    datamodule.setup("fit")
    report = run_critical(model, datamodule)
    x, y = datamodule.transform(datamodule.train_x, datamodule.layout.feature_names), datamodule.train_y
    assert report.whole_set and report.examples == len(y) == 1200  # the demo training split (1,500 rows, 20% held out)
    assert report.num_params == sum(p.numel() for p in model.parameters()) <= 3000 and report.minimum_ratio is not None
    model.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    assert report.loss == pytest.approx(loss.item(), rel=1e-4)
    assert report.grad_norm == pytest.approx(float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()),
                                             rel=1e-3)
    assert report.verdict in (LOCAL_MINIMUM, SADDLE_POINT, NOT_CRITICAL)
    assert format_report(report).startswith(f"Training loss on {len(y):,} examples (the whole training set)")
    # a capped number of batches is a fixed set: the same batches every time
    first, whole = training_batches(datamodule, max_batches=2)
    again, _ = training_batches(datamodule, max_batches=2)
    assert not whole and len(first) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(first, again))

    # what `python homework/hw1.py critical --ckpt_path ...` runs: weights and data settings from the checkpoint
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), progress_bar_callback=None)
    fresh = CovidRegressor(in_features=model.hparams.in_features, hidden_dims=[8])
    data = CovidDataModule(**{k: v for k, v in saved.items() if not k.startswith("_")})
    command = critical_command(trainer, fresh, data, ckpt_path=str(best))
    assert command.loss == pytest.approx(report.loss) and command.largest == pytest.approx(report.largest)
    with pytest.raises(DataError, match="--max_batches must be at least 1"):
        critical_command(trainer, fresh, datamodule, ckpt_path=str(best), max_batches=0)


@pytest.mark.skipif("critical" not in HomeworkCLI.subcommands(), reason="the CLI does not offer `critical` yet")
def test_hw1_critical_subcommand(capsys):
    hw1(["fit", "--trainer.max_epochs", "2", "--model.hidden_dims", "[8]", *QUIET])
    capsys.readouterr()
    hw1(["critical", "--ckpt_path", "best", *QUIET])
    out = capsys.readouterr().out
    assert "Critical-point analysis of " in out and "  gradient norm  " in out and "\nVerdict: " in out
    assert "minimum ratio  0." in out or "minimum ratio  1.000" in out  # 8 hidden units: the full spectrum
    assert not list(Path("runs/hw1").glob("*critical*"))  # an analysis makes no run directory
    # too small a budget for Lanczos (the default hidden sizes: more weights than the full spectrum's limit)
    hw1(["fit", "--trainer.max_epochs", "1", *QUIET])
    line = user_error(capsys, hw1, ["critical", "--ckpt_path", "last", "--max_hvps", "20", *QUIET])
    assert line.startswith("error: --max_hvps 20: Lanczos found no eigenvalue within 20 Hessian-vector products; "
                           "raise --max_hvps")


def test_a_model_without_the_batch_loss_hook_is_told_critical_is_not_available():
    """critical asks the task for `batch_loss(batch)` (datamodules/lab_hooks.py), never which homework's model it
    has."""
    with pytest.raises(DataError, match="critical is not available for this homework: Linear has no batch_loss"):
        run_critical(nn.Linear(2, 1), SimpleNamespace())
    model = CovidRegressor(in_features=3)
    x, y = torch.randn(5, 3), torch.randn(5)
    loss, count = model.batch_loss((x, y))
    assert count == 5 and float(loss) == pytest.approx(float(((model(x) - y) ** 2).mean()))


def one_dimensional(share: float):
    """½θ² + c at θ where a gradient step (of the best length) lowers the loss by `share` of it: the loss is 1."""
    theta = torch.tensor([(2 * share) ** 0.5], dtype=f64)
    return analyze_function(lambda p: 0.5 * (p ** 2).sum() + (1 - share), theta)


def test_the_verdict_words_follow_the_numbers_of_the_gradient_line():
    """0.12% of the loss is just above the 0.1% threshold: "close to a critical point", never "still large"."""
    near = one_dimensional(0.0012)
    text = format_report(near)
    assert near.verdict == NOT_CRITICAL and near.gradient_decrease == pytest.approx(0.0012)
    assert "one gradient step would lower the loss by 0.0012 (0.12% of the loss)" in text
    assert ("Verdict: close to a critical point, not at one: a gradient step would lower the loss by 0.12% of it, "
            "just above the 0.1% counted as critical") in text
    verdict = text.split("Verdict: ")[1]
    assert "large" not in verdict and "noticeably" not in verdict and "had not converged" not in verdict
    far = format_report(one_dimensional(0.13))
    assert "(13% of the loss)" in far
    assert "Verdict: not at a critical point: the gradient is still large, a gradient step would lower the loss by " \
           "13% of it (130x the 0.1% counted as critical)" in far
    edge = format_report(one_dimensional(0.0099))  # the edge of "close": 9.9x the threshold
    assert "close to a critical point" in edge and "0.99% of it" in edge
    assert "still large" in format_report(one_dimensional(0.0101))
    below = one_dimensional(0.0009)  # under the threshold: critical, and a minimum (one positive eigenvalue)
    assert below.verdict == LOCAL_MINIMUM
    assert "looks like a local minimum: the gradient is small" in format_report(below)
