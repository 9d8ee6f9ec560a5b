"""A wall-clock budget for one training run: how many optimizer steps fit, and a schedule that ends.

The run is given seconds, not epochs. The first steps are timed (the very first pays for lazy
initialisation and is left out), then the steps that still fit before the training deadline are
planned, never more than the epochs cap holds, and planned again from the mean step so far at steps
8, 16, 32, … while under three quarters of the plan is done (the first steps run slower than the
later ones, so a plan made from them alone leaves the budget unspent). The cosine learning-rate
schedule is stretched over the planned steps, so it reaches its end at the last step even when the
budget ends mid-epoch. The training deadline is the run's deadline minus what the work after
training needs: a second evaluation as long as the first (measured) and a reserve for saving, the
likeness table and the fast generation artifact (docs/training.md, *A time budget*).

Every reading goes through an injected clock, so the plan is deterministic under test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Steps run before timing starts (the first step allocates and warms caches).
WARMUP_STEPS = 1
#: Steps timed after the warm-up; their mean is the step time the plan uses.
MEASURED_STEPS = 3
#: Share of the budget kept for saving, the likeness table and the fast artifact.
SAVE_RESERVE_FRACTION = 0.15
#: The least seconds kept for them, however short the budget.
MIN_SAVE_RESERVE_S = 5.0


def save_reserve_s(budget_s: float) -> float:
    """Seconds kept after training for saving, the likeness table and the fast artifact."""
    return max(MIN_SAVE_RESERVE_S, SAVE_RESERVE_FRACTION * budget_s)


def cosine_factor(step: int, horizon: int, warmup_ratio: float = 0.0) -> float:
    """The cosine schedule as transformers' ``cosine`` with ``warmup_steps=warmup_ratio``: a
    linear rise over the first ``ceil(warmup_ratio * horizon)`` steps (none by default), then 1
    falling to 0 at ``horizon``."""
    warmup = math.ceil(horizon * warmup_ratio) if warmup_ratio > 0 else 0
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class StepBudget:
    """The steps of one run under a deadline: measured, planned, planned again early on.

    ``deadline`` is the clock reading by which training (not the whole run) must end; ``cap``
    the steps the epochs cap (and ``--max-steps``) allow. :meth:`after_step` is called with each
    finished step and says whether to stop.
    """

    seconds: float
    deadline: float
    cap: int
    clock: Callable[[], float]
    reserve_s: float = 0.0
    #: Waits for the device's queued work (CUDA runs ahead of the host) before a timing reading.
    sync: Callable[[], None] | None = None
    warmup_steps: int = WARMUP_STEPS
    measured_steps: int = MEASURED_STEPS
    #: The share of the schedule's steps that warm the learning rate up (0: none).
    warmup_ratio: float = 0.0
    #: The planned number of steps, once measured (``None`` until then).
    planned: int | None = None
    step_s: float | None = None
    #: True when the deadline came before the planned steps were done (a slower machine).
    hit_deadline: bool = False
    _timing_from: float | None = field(default=None, repr=False)

    @property
    def horizon(self) -> int:
        """The steps the learning-rate schedule spans now: the plan, or the cap before it."""
        return self.planned if self.planned is not None else self.cap

    @property
    def total(self) -> int:
        """The steps progress reports count to."""
        return self.horizon

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier after ``step`` optimizer steps (a ``LambdaLR`` lambda)."""
        return cosine_factor(step, self.horizon, self.warmup_ratio)

    def _plans_at(self, step: int) -> bool:
        """Whether the plan is made (or made again) after ``step``."""
        first = self.warmup_steps + self.measured_steps
        if self.planned is None:
            return step == first
        return step > first and step & (step - 1) == 0 and 4 * step <= 3 * self.planned

    def after_step(self, step: int) -> bool:
        """Record that ``step`` steps are done; True when training should stop now."""
        plans = self._timing_from is not None and self._plans_at(step)
        if (plans or step == self.warmup_steps) and self.sync is not None:
            self.sync()
        now = self.clock()
        if step == self.warmup_steps:
            self._timing_from = now
        elif plans and self._timing_from is not None:
            timed = step - self.warmup_steps
            self.step_s = max((now - self._timing_from) / timed, 1e-9)
            fit = math.floor(max(0.0, self.deadline - now) / self.step_s)
            self.planned = max(step, min(self.cap, step + fit))
        if step >= self.horizon:
            return True
        if now >= self.deadline:
            self.hit_deadline = True
            return True
        return False

    def record(self, steps_done: int) -> dict[str, Any]:
        """What ``training.json`` keeps of the plan."""
        return {
            "seconds": self.seconds,
            "cap_steps": self.cap,
            "step_s": None if self.step_s is None else round(self.step_s, 6),
            "planned_steps": self.planned,
            "steps": steps_done,
            "reserve_s": round(self.reserve_s, 3),
            "hit_deadline": self.hit_deadline,
        }
