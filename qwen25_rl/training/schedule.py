"""Learning-rate schedules (pure functions of the step).

Each training phase has its own peak lr, linear warm-up and decay (cosine, linear or
constant) down to `min_lr_ratio * peak`; a multi-phase run is the phases back to back,
indexed by the global step. The optimizer's lr is set from this at every step, so resuming
at step s reproduces the schedule exactly without any scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PhaseSchedule:
    steps: int
    peak_lr: float
    warmup_steps: int = 0
    decay: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.0

    def lr(self, step: int) -> float:
        """lr for the optimizer update at 0-based `step` within this phase."""
        if not 0 <= step < self.steps:
            raise ValueError(f"step {step} outside phase of {self.steps} steps")
        if self.warmup_steps and step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return self.peak_lr
        span = self.steps - self.warmup_steps
        if span <= 1:
            return self.peak_lr
        progress = (step - self.warmup_steps) / (span - 1)
        floor = self.min_lr_ratio * self.peak_lr
        if self.decay == "cosine":
            return floor + (self.peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.decay == "linear":
            return floor + (self.peak_lr - floor) * (1.0 - progress)
        raise ValueError(f"unknown decay {self.decay!r} (cosine, linear, constant)")


def lr_at(phases: list[PhaseSchedule], global_step: int) -> float:
    """lr at a 0-based global step of phases run back to back."""
    at = global_step
    for p in phases:
        if at < p.steps:
            return p.lr(at)
        at -= p.steps
    raise ValueError(f"global step {global_step} is past the last phase ({sum(p.steps for p in phases)} steps)")
