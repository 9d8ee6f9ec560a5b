"""A wall-clock budget for one training run: a schedule that ends at its deadline, and its steps.

The run is given seconds, not epochs. The learning-rate schedule follows the run's progress in
time, not in steps: after each step its progress is the larger of the share of the training time
spent (from the end of the first step, which pays for lazy initialisation, to the training
deadline) and the share of the epochs cap done, and the cosine is read at that progress. So it
reaches its end at the deadline however fast each step turns out to be (on a shared machine the
pace drifts by a tenth either way during a run), and a small account still ends its schedule at its
last epoch. The step time is measured on the first steps (steps 2-4) and again at steps 8, 16, 32,
... as the mean so far; training stops when the next step would end past the deadline, and the
steps planned (for progress and the ETA) are those that fit at that pace. The training deadline is
the run's deadline minus what the work after training needs: a second evaluation up to half as long
again as the first (measured) and a reserve for saving, the likeness table and the fast generation
artifact (docs/training.md, *A time budget*).

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
#: How much longer than the one before the evaluation after training is assumed to take: on the
#: 2-core benchmark machine it took 0.83-1.47 times as long in eight runs (1.25-1.47 in the
#: last four).
EVAL_AFTER_FACTOR = 1.5
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
    return schedule_factor((step - warmup) / max(1, horizon - warmup))


def schedule_factor(progress: float, warmup_ratio: float = 0.0) -> float:
    """The schedule at ``progress`` (0 to 1) of a run: a linear rise over its first
    ``warmup_ratio`` (none by default), then the cosine from 1 to 0 at 1."""
    progress = min(1.0, max(0.0, progress))
    if warmup_ratio > 0 and progress < warmup_ratio:
        return progress / warmup_ratio
    rest = (progress - warmup_ratio) / max(1e-12, 1.0 - warmup_ratio)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * rest)))


@dataclass
class StepBudget:
    """The steps of one run under a deadline: a schedule in time, steps measured and planned.

    ``deadline`` is the clock reading by which training (not the whole run) must end; ``cap``
    the steps the epochs cap (and ``--max-steps``) allow. :meth:`after_step` is called with each
    finished step and says whether to stop; :meth:`lr_factor` is the schedule.
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
    #: The share of the run over which the learning rate warms up (0: none).
    warmup_ratio: float = 0.0
    #: The steps that fit at the measured pace, once measured (``None`` until then).
    planned: int | None = None
    step_s: float | None = None
    #: True when the deadline ended training (else the epochs cap or ``--max-steps`` did).
    hit_deadline: bool = False
    _timing_from: float | None = field(default=None, repr=False)
    #: The share of the training time spent at the last finished step (``None`` before timing).
    _spent: float | None = field(default=None, repr=False)

    @property
    def horizon(self) -> int:
        """The steps the run is expected to take: the plan, or the cap before it."""
        return self.planned if self.planned is not None else self.cap

    @property
    def total(self) -> int:
        """The steps progress reports count to."""
        return self.horizon

    def progress(self, step: int) -> float:
        """How far the run is after ``step`` steps: the larger of the share of the cap done and
        the share of the training time spent at the last finished step."""
        done = step / max(1, self.cap)
        return done if self._spent is None else max(done, self._spent)

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier after ``step`` optimizer steps (a ``LambdaLR`` lambda)."""
        if self._spent is None:  # before the first step ends: over the cap, as transformers'
            return cosine_factor(step, self.cap, self.warmup_ratio)
        return schedule_factor(self.progress(step), self.warmup_ratio)

    def _measures_at(self, step: int) -> bool:
        """Whether the step time is measured (again) after ``step``."""
        first = self.warmup_steps + self.measured_steps
        return step == first or (step > first and step & (step - 1) == 0)

    def after_step(self, step: int) -> bool:
        """Record that ``step`` steps are done; True when training should stop now."""
        measures = self._timing_from is not None and self._measures_at(step)
        if (measures or step == self.warmup_steps) and self.sync is not None:
            self.sync()
        now = self.clock()
        if step == self.warmup_steps:
            self._timing_from = now
        elif measures and self._timing_from is not None:
            timed = step - self.warmup_steps
            self.step_s = max((now - self._timing_from) / timed, 1e-9)
        if self._timing_from is not None:
            available = self.deadline - self._timing_from
            self._spent = (now - self._timing_from) / available if available > 0 else 1.0
        if self.step_s is not None:
            fit = math.floor(max(0.0, self.deadline - now) / self.step_s)
            self.planned = max(step, min(self.cap, step + fit))
        if step >= self.cap:
            return True
        # Stop when the next step would end past the deadline (or the deadline has passed).
        if now >= self.deadline or (self.planned is not None and self.planned <= step):
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
