"""Critical-point analysis (the "optimization" lecture): at the trained weights, is the gradient small,
and if so, is the point a local minimum or a saddle point?

Near a point θ' the loss is L(θ) ≈ L(θ') + gᵀ(θ−θ') + ½(θ−θ')ᵀH(θ−θ'). Where the gradient g is (nearly)
zero, the Hessian H decides: all eigenvalues positive, a local minimum; some negative, a saddle point,
which training escapes by moving along the eigenvector of a negative eigenvalue. The lecture's
"minimum ratio" is the fraction of positive eigenvalues.

H is never built for a big model: Lanczos (scipy's ARPACK `eigsh`) needs only Hessian-vector products,
which `torch.func` computes in about the cost of two gradients. Up to `FULL_SPECTRUM_MAX_PARAMS`
parameters the whole Hessian is affordable (stacked Hessian-vector products, then `eigh`), which gives
the full spectrum and the minimum ratio.

    report = analyze_function(lambda p: p[0] ** 2 - p[1] ** 2, torch.zeros(2))   # any f(flat vector)
    report = run_critical(model, datamodule)                                       # a homework's model
    print(format_report(report))
"""

import copy
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from datamodules.console import redraws
from datamodules.errors import DataError

# n×n float64 numbers: 3,000 parameters make a 72 MB Hessian, 3,000 Hessian-vector products and a
# seconds-long `eigh`; beyond that Lanczos finds the extreme eigenvalues only.
FULL_SPECTRUM_MAX_PARAMS = 3000
# Critical when a gradient step could lower the loss by at most this fraction of it (see `Verdict` below).
GRADIENT_RTOL = 1e-3
GRADIENT_ATOL = 1e-12  # ... or by this much in absolute terms (a loss of 0 at a minimum)
# Eigenvalues within this fraction of the largest |eigenvalue| of zero count as flat, neither up nor down:
# round-off and Lanczos' own accuracy (a tenth of it, EIGSH_TOL) stay far below it.
EIGENVALUE_RTOL = 1e-3
EIGSH_TOL = 1e-4
# The loss is evaluated on the whole training set when its loader has at most this many batches
# (HW1's ~2,200 rows in 17-24 batches of 128), else on the first DEFAULT_MAX_BATCHES batches: each
# Hessian-vector product costs a pass over them, and Lanczos takes 50-300 of them (HW2's demo LSTM on one
# batch of 512 windows: ~1-4 s each on a 2-core CPU). More batches: a truer training loss, linearly slower.
WHOLE_SET_MAX_BATCHES = 32
DEFAULT_MAX_BATCHES = 1
DEFAULT_MAX_HVPS = 2000  # Lanczos' budget of Hessian-vector products, for each end of the spectrum
# float64 where it is cheap (HW1's MLP: the analysis takes seconds either way); above, float32 about halves
# the time, and its round-off (~1e-7 relative) stays far below EIGENVALUE_RTOL.
FLOAT64_MAX_PARAMS = 100_000

LOCAL_MINIMUM, SADDLE_POINT, NOT_CRITICAL = "local minimum", "saddle point", "not critical"


@dataclass
class CriticalPointReport:
    """The numbers behind the verdict; `format_report` writes them as a few lines."""

    verdict: str  # LOCAL_MINIMUM, SADDLE_POINT or NOT_CRITICAL
    loss: float
    grad_norm: float
    gradient_decrease: float  # how much one gradient step would lower the loss on the local quadratic model
    num_params: int
    largest: list[float]  # the largest Hessian eigenvalues, largest first
    smallest: list[float]  # the smallest, smallest first
    eigenvalue_tol: float  # |λ| <= tol counts as flat
    method: str  # "full Hessian" or "Lanczos"
    hvps: int  # Hessian-vector products computed
    hvp_mode: str = "forward-over-reverse"  # or "reverse-over-reverse", where an op lacks forward mode
    converged: bool = True  # Lanczos reached EIGSH_TOL within its budget
    max_full_params: int = FULL_SPECTRUM_MAX_PARAMS  # the full spectrum is computed up to this many parameters
    spectrum: np.ndarray | None = None  # every eigenvalue, ascending (full Hessian only)
    escape_direction: np.ndarray | None = field(default=None, repr=False)  # eigenvector of the smallest eigenvalue
    escape_parameter: str | None = None  # the parameter tensor that direction moves most (module path)
    examples: int | None = None  # what the loss averaged over (module path)
    batches: int | None = None
    whole_set: bool | None = None
    dtype: str = "float64"
    seconds: float = 0.0

    @property
    def minimum_ratio(self) -> float | None:
        """The lecture's minimum ratio: the fraction of positive eigenvalues (full spectrum only)."""
        return None if self.spectrum is None else float(np.mean(self.spectrum > 0))

    @property
    def counts(self) -> tuple[int, int, int] | None:
        """Eigenvalues above the tolerance, within it (flat) and below it: (positive, flat, negative)."""
        if self.spectrum is None:
            return None
        tol = self.eigenvalue_tol
        return (int((self.spectrum > tol).sum()), int((np.abs(self.spectrum) <= tol).sum()),
                int((self.spectrum < -tol).sum()))


# --- a loss as a sum of weighted terms of one flat parameter vector -----------------------------------
Term = tuple[Callable[[torch.Tensor], torch.Tensor], float]  # (f(θ) -> scalar loss, weight)


class FlatLoss:
    """L(θ) = Σ wᵢ fᵢ(θ): value, gradient and Hessian-vector products, one term (batch) at a time so
    memory holds one batch's graph, whatever the number of batches."""

    def __init__(self, terms: Sequence[Term], theta: torch.Tensor, progress: Callable[[], None] | None = None) -> None:
        self.terms, self.theta, self.hvps, self.progress = list(terms), theta.detach(), 0, progress
        self.hvp_mode = "forward-over-reverse"

    def value_and_grad(self) -> tuple[float, torch.Tensor]:
        loss, gradient = 0.0, torch.zeros_like(self.theta)
        for f, weight in self.terms:
            g, value = torch.func.grad_and_value(f)(self.theta)
            loss, gradient = loss + weight * float(value), gradient + weight * g
        return loss, gradient

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H v. Forward-over-reverse (`jvp` of `grad`) is torch.func's recommended Hessian-vector product:
        one forward pass with dual numbers through the gradient computation, without keeping the
        backward pass's graph as reverse-over-reverse (`vjp` of `grad`) must. Some ops' backward has no
        working forward-mode derivative (torch 2.x's `mse_loss`, HW1's loss, fails with "ZeroTensors are
        immutable"); then reverse-over-reverse it is, for the rest of the analysis (H is symmetric: vᵀH = Hv)."""
        self.hvps += 1
        if self.progress is not None:
            self.progress()
        return self._hvp(v)

    def _hvp(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(self.theta)
        for f, weight in self.terms:
            out = out + weight * self._term_hvp(f, v)  # (not +=: under vmap the right side is batched)
        return out

    def _term_hvp(self, f, v: torch.Tensor) -> torch.Tensor:
        if self.hvp_mode == "forward-over-reverse":
            try:
                with warnings.catch_warnings():  # torch's jvp decompositions are built with torch.jit.script
                    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")
                    return torch.func.jvp(torch.func.grad(f), (self.theta,), (v,))[1]
            except (NotImplementedError, RuntimeError):
                self.hvp_mode = "reverse-over-reverse"  # (a genuine error raises again just below)
        return torch.func.vjp(torch.func.grad(f), self.theta)[1](v)[0]

    def hessian(self, chunk_size: int = 64) -> torch.Tensor:
        """The whole n×n Hessian, as Hessian-vector products of the basis vectors (`vmap`ped in chunks)."""
        n = self.theta.numel()
        eye = torch.eye(n, dtype=self.theta.dtype, device=self.theta.device)
        try:
            columns = torch.func.vmap(self._hvp, chunk_size=chunk_size)(eye)
        except (NotImplementedError, RuntimeError):  # an op without a batching rule: one column at a time
            columns = torch.stack([self._hvp(e) for e in eye])
        self.hvps += n
        return (columns + columns.T) / 2  # symmetric up to round-off


# --- the analysis -------------------------------------------------------------------------------------
def analyze(loss: FlatLoss, top_k: int = 1, max_full_params: int = FULL_SPECTRUM_MAX_PARAMS,
            max_hvps: int = DEFAULT_MAX_HVPS) -> CriticalPointReport:
    """Loss, gradient norm, extreme Hessian eigenvalues (the full spectrum when n <= max_full_params),
    and the verdict."""
    start = time.perf_counter()
    n = loss.theta.numel()
    value, gradient = loss.value_and_grad()
    grad_norm = float(gradient.norm())
    # On the quadratic model, a gradient step of the best length lowers the loss by ‖g‖⁴ / (2 gᵀHg).
    curvature = float(gradient @ loss.hvp(gradient)) if grad_norm > 0 else 0.0
    decrease = 0.0 if grad_norm == 0 else (grad_norm ** 4 / (2 * curvature) if curvature > 0 else math.inf)

    k = max(1, min(top_k, n // 2))  # a 2-parameter saddle: one eigenvalue from each end
    spectrum, converged = None, True
    if n <= max_full_params or n <= 2 * k + 1:  # (ARPACK needs k < n; tiny problems are cheap anyway)
        hessian = loss.hessian().double().cpu().numpy()
        spectrum, vectors = np.linalg.eigh(hessian)
        largest, smallest = spectrum[::-1][:k].tolist(), spectrum[:k].tolist()
        bottom_vector, method = vectors[:, 0], "full Hessian"
    else:
        largest, smallest, bottom_vector, converged = _lanczos_extremes(loss, k, max_hvps)
        method = "Lanczos"
    tol = EIGENVALUE_RTOL * max(abs(largest[0]), abs(smallest[0]), 1e-12)

    critical = decrease <= GRADIENT_RTOL * abs(value) + GRADIENT_ATOL
    if not critical:
        verdict = NOT_CRITICAL
    else:
        verdict = SADDLE_POINT if smallest[0] < -tol else LOCAL_MINIMUM
    return CriticalPointReport(
        verdict=verdict, loss=value, grad_norm=grad_norm, gradient_decrease=decrease, num_params=n,
        largest=largest, smallest=smallest, eigenvalue_tol=tol, method=method, hvps=loss.hvps, hvp_mode=loss.hvp_mode,
        converged=converged, max_full_params=max_full_params, spectrum=spectrum,
        escape_direction=bottom_vector if smallest[0] < -tol else None,
        dtype=str(loss.theta.dtype).removeprefix("torch."), seconds=time.perf_counter() - start)


def _lanczos_extremes(loss: FlatLoss, k: int, max_hvps: int) -> tuple[list[float], list[float], np.ndarray, bool]:
    """The k largest and k smallest eigenvalues by Lanczos (ARPACK's implicitly restarted Lanczos, through
    scipy: well kept, and it needs only the products Hv). The smallest are found as the largest of
    λ_max·I − H: the same Krylov space as asking for the smallest, but ARPACK's stopping rule (relative to
    the eigenvalue found) then asks for accuracy relative to λ_max, not to a λ_min near zero that no
    number of iterations pins down relatively."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n, theta = loss.theta.numel(), loss.theta
    v0 = np.random.default_rng(0).standard_normal(n)  # the same start every time: reproducible numbers
    ncv = min(n - 1, max(2 * k + 1, 20))
    maxiter = max(1, max_hvps // max(1, ncv - k))

    def operator(shift: float, sign: float) -> LinearOperator:
        def matvec(v: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=theta.dtype, device=theta.device)
            return shift * v.reshape(-1) + sign * loss.hvp(x).double().cpu().numpy()
        return LinearOperator((n, n), matvec=matvec, dtype=np.float64)

    def top(op: LinearOperator) -> tuple[np.ndarray, np.ndarray, bool]:
        try:
            values, vectors = eigsh(op, k=k, which="LA", tol=EIGSH_TOL, ncv=ncv, maxiter=maxiter, v0=v0)
            done = True
        except ArpackNoConvergence as err:  # the budget ran out: what converged, else we cannot say
            values, vectors, done = err.eigenvalues, err.eigenvectors, False
            if len(values) == 0:
                raise DataError(f"--max_hvps {max_hvps}: Lanczos found no eigenvalue within {max_hvps} "
                                f"Hessian-vector products; raise --max_hvps (default {DEFAULT_MAX_HVPS})") from None
        order = np.argsort(values)[::-1]
        return values[order], vectors[:, order], done

    high, _, done_high = top(operator(0.0, 1.0))
    lam_max = float(high[0])
    shifted, low_vectors, done_low = top(operator(lam_max, -1.0))
    return high.tolist(), (lam_max - shifted).tolist(), low_vectors[:, 0], done_high and done_low


def analyze_function(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, **kwargs) -> CriticalPointReport:
    """The analysis of any scalar function of one flat vector, at `theta` (e.g. x² − y² at the origin)."""
    return analyze(FlatLoss([(f, 1.0)], theta), **kwargs)


# --- a homework's model on a fixed set of training batches --------------------------------------------
def batch_training_loss(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
    """The loss training minimizes on one batch, and what it averages over (examples, or HW5's tokens): the
    task's `batch_loss` hook (datamodules/lab_hooks.py), the loss-only part of its training_step (which also logs,
    updates metrics and, for HW1, steps the optimizer)."""
    return model.batch_loss(batch)


def check_batch_loss(model: nn.Module) -> None:
    """`critical` needs the task's `batch_loss(batch)` hook: without it, one line saying so."""
    if not callable(getattr(model, "batch_loss", None)):
        raise DataError(f"critical is not available for this homework: {type(model).__name__} has no "
                        f"batch_loss(batch) method (the training loss of one batch; see datamodules/lab_hooks.py)")


class _BatchLoss(nn.Module):
    """`batch_training_loss` as a module's forward, so `torch.func.functional_call` can swap in parameters."""

    def __init__(self, model: nn.Module, batch_loss: Callable) -> None:
        super().__init__()
        self.model, self.batch_loss = model, batch_loss

    def forward(self, batch) -> torch.Tensor:
        return self.batch_loss(self.model, batch)[0]


def analyze_module(model: nn.Module, batches: Sequence, batch_loss: Callable = batch_training_loss,
                   dtype: torch.dtype | None = None, progress: Callable[[], None] | None = None,
                   **kwargs) -> CriticalPointReport:
    """The analysis of `model`'s trainable parameters, on the mean loss over `batches`, in eval mode
    (dropout off; batch norm uses its running statistics), in `dtype` (None: float64 up to
    FLOAT64_MAX_PARAMS parameters, else float32). The model itself is left untouched."""
    if dtype is None:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        dtype = torch.float64 if trainable <= FLOAT64_MAX_PARAMS else torch.float32
    model = copy.deepcopy(model).to(dtype).eval()
    batches = [_cast_floats(b, dtype) for b in batches]
    if not batches:
        raise ValueError("no training batches to evaluate the loss on")
    wrapper = _BatchLoss(model, batch_loss)
    named = [(f"model.{name}", p) for name, p in model.named_parameters() if p.requires_grad]
    names, shapes = [name for name, _ in named], [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_of(batch):
        def f(flat: torch.Tensor) -> torch.Tensor:
            params = {name: piece.view(shape) for name, piece, shape in zip(names, flat.split(sizes), shapes)}
            return torch.func.functional_call(wrapper, params, (batch,))
        return f

    with torch.no_grad():
        counts = [float(batch_loss(model, b)[1]) for b in batches]
    total = sum(counts)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no torch.func derivatives
    try:
        terms = [(loss_of(b), c / total) for b, c in zip(batches, counts)]
        report = analyze(FlatLoss(terms, theta, progress), **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    if report.escape_direction is not None:
        shares = [float(np.sum(piece ** 2)) for piece in np.split(report.escape_direction, np.cumsum(sizes)[:-1])]
        report.escape_parameter = names[int(np.argmax(shares))].removeprefix("model.")
    report.examples, report.batches = int(total), len(batches)
    return report


def _cast_floats(batch, dtype: torch.dtype):
    if isinstance(batch, torch.Tensor):
        return batch.to(dtype) if batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: _cast_floats(v, dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_cast_floats(v, dtype) for v in batch)
    return batch


def training_batches(datamodule, max_batches: int | None = None, device: torch.device | str = "cpu",
                     seed: int = 0) -> tuple[list, bool]:
    """A fixed set of training batches, as the model sees them (the DataModule's transfer hooks applied,
    outside training: no MixUp). `max_batches` None: the whole training set when its loader has at most
    WHOLE_SET_MAX_BATCHES batches, else the first DEFAULT_MAX_BATCHES. The loader's shuffle is seeded, so
    the same batches come back every time. Returns (batches, whether they are the whole training set)."""
    from pytorch_lightning.utilities import move_data_to_device

    loader = datamodule.train_dataloader()
    if max_batches is None:
        available = len(loader) if hasattr(loader, "__len__") else math.inf
        max_batches = None if available <= WHOLE_SET_MAX_BATCHES else DEFAULT_MAX_BATCHES
    batches, whole = [], True
    with torch.random.fork_rng(devices=[]):  # the same batches every time, without touching the caller's RNG
        torch.manual_seed(seed)
        for item in loader:
            # a MinibatchLoopTask's loader may yield lists of minibatches (datamodules.base.MinibatchSampler)
            group = item if isinstance(item, list) and item and isinstance(item[0], (list, tuple)) else [item]
            for batch in group:
                if max_batches is not None and len(batches) == max_batches:
                    whole = False
                    break
                batch = datamodule.on_before_batch_transfer(batch, 0)
                batches.append(datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0))
            if not whole:
                break
    return batches, whole


def run_critical(model: nn.Module, datamodule, max_batches: int | None = None, top_k: int = 1,
                 max_full_params: int = FULL_SPECTRUM_MAX_PARAMS, max_hvps: int = DEFAULT_MAX_HVPS,
                 dtype: torch.dtype | None = None, progress: Callable[[], None] | None = None) -> CriticalPointReport:
    """The `critical` subcommand's work: `model` holds the checkpoint's weights and `datamodule` is set up
    for "fit" (its training loader is read here). See `training_batches` for which batches."""
    check_batch_loss(model)
    start = time.perf_counter()
    device = next(model.parameters()).device
    batches, whole = training_batches(datamodule, max_batches, device)
    report = analyze_module(model, batches, dtype=dtype, progress=progress, top_k=top_k,
                            max_full_params=max_full_params, max_hvps=max_hvps)
    report.whole_set, report.seconds = whole, time.perf_counter() - start
    return report


def critical_command(trainer, model: nn.Module, datamodule, ckpt_path: str | None = None,
                     max_batches: int | None = None, top_k: int = 1,
                     max_full_params: int = FULL_SPECTRUM_MAX_PARAMS,
                     max_hvps: int = DEFAULT_MAX_HVPS) -> CriticalPointReport:
    """Critical-point analysis ("optimization" lecture): is the trained model at a local minimum or a saddle point?

    Computes the training loss's gradient norm and the extreme eigenvalues of its Hessian at the
    checkpoint's weights (`homework/lab/critical.py`), and prints the numbers and a verdict.

    Args:
        model: The homework's model (built by the CLI).
        datamodule: The homework's data, with the checkpoint's data settings.
        ckpt_path: The checkpoint to analyse: best, last or a .ckpt file.
        max_batches: Training batches the loss is evaluated on. None: the whole training set if its loader
            has at most 32 batches (HW1), else the first batch (seeded shuffle).
        top_k: How many of the largest and of the smallest Hessian eigenvalues to report.
        max_full_params: Up to this many parameters the whole Hessian is built, for the full spectrum and
            the minimum ratio; above it, Lanczos finds the extreme eigenvalues only.
        max_hvps: Lanczos' budget of Hessian-vector products for each end of the spectrum.
    """
    for name, value, least in (("max_batches", max_batches, 1), ("top_k", top_k, 1), ("max_hvps", max_hvps, 1),
                               ("max_full_params", max_full_params, 0)):
        if value is not None and value < least:
            raise DataError(f"--{name} must be at least {least} (got {value})")
    check_batch_loss(model)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    state = checkpoint.get(type(datamodule).__qualname__)
    if state:  # what the datamodule saved (HW1: the training split's feature scaling), as `predict` uses it
        datamodule.load_state_dict(state)
    from tqdm import tqdm

    # Hessian-vector products are the work: a big model on a CPU takes minutes, so show them coming (on a
    # terminal: piped to a log or in a notebook, a redrawn bar is `\r` fragments, and the report says how long it took)
    shown = bool(trainer.progress_bar_callback) and redraws()
    if trainer.progress_bar_callback and not shown:
        print("Computing the gradient and the Hessian's extreme eigenvalues (Hessian-vector products) ...",
              file=sys.stderr, flush=True)
    with tqdm(desc="Hessian-vector products", unit="", leave=False, disable=not shown) as bar:
        report = run_critical(model.to(trainer.strategy.root_device), datamodule, max_batches, top_k,
                              max_full_params, max_hvps, progress=bar.update)
    print(f"Critical-point analysis of {ckpt_path}\n{format_report(report)}\n({report.seconds:.1f} s)")
    return report


# --- what a student reads -------------------------------------------------------------------------------
def _numbers(values: list[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def format_report(report: CriticalPointReport) -> str:
    """A few lines: the numbers, then the verdict and what it means for training."""
    r, lines = report, []
    if r.examples is not None:
        where = ("the whole training set" if r.whole_set else
                 f"the first {'batch' if r.batches == 1 else f'{r.batches} batches'} of the training set, seeded "
                 f"shuffle; --max_batches for more")
        lines.append(f"Training loss on {r.examples:,} examples ({where}), eval mode, {r.dtype}")
    step = ("none: the loss curves down along the gradient" if math.isinf(r.gradient_decrease)
            else f"{r.gradient_decrease:.3g}"
            + (f" ({_percent(r.gradient_decrease / abs(r.loss))} of the loss)" if r.loss else ""))
    lines += [f"  loss           {r.loss:.6g}",
              f"  gradient norm  {r.grad_norm:.4g}   (one gradient step would lower the loss by {step})"]
    how = ("the full Hessian" if r.method == "full Hessian" else
           f"Lanczos, {r.hvps} Hessian-vector products" + ("" if r.converged else ", NOT converged within its budget"))
    lines += [f"  Hessian        {r.num_params:,} parameters ({how})",
              f"    largest eigenvalues   {_numbers(r.largest)}",
              f"    smallest eigenvalues  {_numbers(r.smallest)}   "
              f"(|eigenvalue| <= {r.eigenvalue_tol:.3g} counts as flat)"]
    if r.spectrum is not None:
        positive, flat, negative = r.counts
        lines.append(f"  minimum ratio  {r.minimum_ratio:.3f} (fraction of positive eigenvalues; "
                     f"{positive} above the tolerance, {flat} flat, {negative} below)")
    else:
        lines.append(f"  minimum ratio  not computed: the full spectrum is computed up to "
                     f"{r.max_full_params:,} parameters")
    lines.append("Verdict: " + verdict_line(r))
    return "\n".join(lines)


#: A gradient step's decrease up to this many times the critical threshold is "close to" a critical point: the
#: words follow the number (0.12% of the loss is not "still large" next to a threshold of 0.1%).
NEAR_CRITICAL = 10


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2g}%"


def verdict_line(r: CriticalPointReport) -> str:
    """The verdict in words that follow the numbers above it: how far from critical, in the same share of the
    loss the gradient line gives, against the threshold (GRADIENT_RTOL)."""
    if r.verdict == NOT_CRITICAL:
        negative = (f". The Hessian already has a negative eigenvalue ({r.smallest[0]:.3g})"
                    if r.smallest[0] < -r.eigenvalue_tol else "")
        threshold = _percent(GRADIENT_RTOL)
        if math.isinf(r.gradient_decrease):
            return ("not at a critical point: the loss curves down along the gradient, so a gradient step lowers "
                    "it by as much as the step is long; training had not converged (or stopped early)" + negative)
        share = r.gradient_decrease / abs(r.loss) if r.loss else math.inf
        if share <= NEAR_CRITICAL * GRADIENT_RTOL:
            return (f"close to a critical point, not at one: a gradient step would lower the loss by "
                    f"{_percent(share)} of it, just above the {threshold} counted as critical: training has "
                    f"nearly converged" + negative)
        how_much = (f"{_percent(share)} of it ({share / GRADIENT_RTOL:.0f}x the {threshold} counted as critical)"
                    if math.isfinite(share) else f"{r.gradient_decrease:.3g} from a loss of 0")
        return (f"not at a critical point: the gradient is still large, a gradient step would lower the loss by "
                f"{how_much}; training had not converged (or stopped early)" + negative)
    if r.verdict == SADDLE_POINT:
        where = f", mostly in {r.escape_parameter}" if r.escape_parameter else ""
        return (f"saddle point: the gradient is small but the loss curves down along the eigenvector of the most "
                f"negative eigenvalue ({r.smallest[0]:.4g}{where}); escape along it: a step of length η lowers the "
                f"loss by about {abs(r.smallest[0]) / 2:.3g}·η²")
    return ("looks like a local minimum: the gradient is small and no direction curves down "
            f"(smallest eigenvalue {r.smallest[0]:.3g} >= -{r.eigenvalue_tol:.3g})")
