"""Learning-rate schedules from the course: linear warmup, then cosine decay, stepped per batch."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosineLR(LambdaLR):
    """Linear warmup from ~0 to the optimizer's lr, then cosine decay to `min_lr_ratio` × lr.

    Stepped every batch. `total_steps=None` (the default) takes the count from the trainer
    (`trainer.estimated_stepping_batches`), filled in by `BaseTask.configure_optimizers`, so
    the same config works for any epoch budget. `warmup_steps` < 1 is a fraction of the total.
    Written as one LambdaLR rather than torch's SequentialLR(LinearLR, CosineAnnealingLR)
    because the total is only known after construction, and SequentialLR fixes it up front.

    Args:
        optimizer: The optimizer whose learning rate is scheduled (filled in by the model).
        warmup_steps: Steps of linear warmup; below 1, a fraction of all steps.
        total_steps: Steps of the whole schedule; None: the whole fit (re-spanned when a resumed fit runs longer).
        min_lr_ratio: Learning rate at the end, as a fraction of the optimizer's lr.
    """

    interval = "step"  # read by BaseTask when it hands the scheduler to Lightning

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if warmup_steps < 0 or (total_steps is not None and total_steps < 1) or not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"WarmupCosineLR needs warmup_steps >= 0, total_steps >= 1 and 0 <= min_lr_ratio <= 1 "
                             f"(got {warmup_steps}, {total_steps}, {min_lr_ratio})")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self.lr_factor)

    def lr_factor(self, step: int) -> float:
        total = self.total_steps
        if total is None or not math.isfinite(total):
            return 1.0  # before the trainer has told us the total (LambdaLR evaluates step 0 on init)
        warmup = self.warmup_steps * total if self.warmup_steps < 1 else self.warmup_steps
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def set_total_steps(self, total_steps: int) -> None:
        """Fix the schedule's length and re-apply the step-0 learning rate."""
        self.total_steps = total_steps
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * self.lr_factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class InverseSqrtLR(LambdaLR):
    """Linear warmup to the optimizer's lr over `warmup_steps`, then decay as 1 / sqrt(step): the
    Transformer paper's schedule (fairseq's `inverse_sqrt`, the course's NoamOpt with lr as the peak).

    Stepped every batch. Unlike cosine decay it needs no total step count, so a run can go on as long
    as early stopping lets it.
    """

    interval = "step"  # read by BaseTask when it hands the scheduler to Lightning

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 4000) -> None:
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be positive (got {warmup_steps})")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, self.lr_factor)

    def lr_factor(self, step: int) -> float:
        step += 1
        return min(step / self.warmup_steps, math.sqrt(self.warmup_steps / step))
