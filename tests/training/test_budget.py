"""The wall-clock budget: a schedule that ends at the deadline, steps from the measured pace.

Time is a fake clock throughout (every reading advances it by a fixed tick): nothing here
depends on how fast this machine is.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from training.budget import StepBudget, cosine_factor, save_reserve_s, schedule_factor
from training.cleaning import DataTable
from training.commands.train import time_budget
from training.errors import InputError
from training.progress import JsonProgress
from training.store import ModelStore
from training.train import TrainConfig, train_model


class TickingClock:
    """Each reading returns the current time, then moves it on by ``tick`` seconds."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.now = 0.0

    def __call__(self) -> float:
        now = self.now
        self.now += self.tick
        return now


def _run_steps(budget: StepBudget, limit: int = 10_000) -> int:
    step = 0
    while step < limit:
        step += 1
        if budget.after_step(step):
            return step
    raise AssertionError("the budget never stopped")


@pytest.mark.parametrize(("step_s", "planned"), [(1.0, 50), (2.0, 25), (0.5, 100)])
def test_the_step_count_follows_the_throughput_measured_on_the_first_steps(
    step_s: float, planned: int
) -> None:
    # Step 1 ends at `step_s` (warm-up, not timed), steps 2-4 are timed; what is left before
    # the deadline at 50 s, divided by the step time, is added to the 4 steps done.
    budget = StepBudget(seconds=60, deadline=50, cap=1000, clock=TickingClock(step_s))
    budget.clock()  # the training starts at 0
    assert _run_steps(budget) == planned
    assert budget.planned == planned and budget.step_s == step_s
    assert budget.hit_deadline  # the deadline ended it, not the cap


def test_the_epochs_cap_ends_a_small_account_before_its_budget() -> None:
    budget = StepBudget(seconds=300, deadline=290, cap=12, clock=TickingClock(1.0))
    assert _run_steps(budget) == 12
    assert budget.planned == 12 and budget.horizon == 12
    # Its schedule ends with the cap, though little of the time was spent.
    assert budget.lr_factor(12) == 0.0 and not budget.hit_deadline


def test_a_machine_that_slows_down_still_stops_at_the_deadline() -> None:
    readings = iter([0.0, 1.0, 2.0, 3.0] + [3.0 + 10.0 * n for n in range(1, 100)])
    budget = StepBudget(seconds=60, deadline=30, cap=1000, clock=lambda: next(readings))
    assert _run_steps(budget) == 7  # step 7 ends at 33 s, past the deadline
    assert budget.hit_deadline


def _steps_taking(first: int, before: float, after: float) -> Callable[[], float]:
    """A clock read once per step: steps 2..``first`` take ``before`` s each, later ones
    ``after`` s (step 1 ends at 0)."""
    step = 0

    def clock() -> float:
        nonlocal step
        step += 1
        done = min(step, first) - 1
        return done * before + max(0, step - first) * after

    return clock


def _run_recording(budget: StepBudget) -> tuple[int, list[int | None], list[float]]:
    """The step training stops at, and the plan and the learning-rate factor after each step."""
    plans: list[int | None] = []
    factors: list[float] = []
    step = 0
    while not budget.after_step(step := step + 1):
        plans.append(budget.planned)
        factors.append(budget.lr_factor(step))
    return step, plans, factors


def test_a_pace_that_speeds_up_trains_on_to_the_deadline_and_the_schedule_ends_there() -> None:
    # 1 s steps up to step 32, 0.5 s ones after: the first plan (at step 4) is 101 steps, but
    # the steps go on until the next would end past the deadline at 100 s: at step 169 (99.5 s;
    # the mean step so far, 0.62 s, no longer fits). The cosine follows the time, so it has
    # all but ended there.
    budget = StepBudget(seconds=120, deadline=100, cap=1000, clock=_steps_taking(32, 1.0, 0.5))
    stopped_at, plans, factors = _run_recording(budget)
    assert plans[3] == 101 and stopped_at == budget.planned == 169
    assert budget.lr_factor(stopped_at) < 1e-3 and budget.hit_deadline
    # At step 100 (65 s: 65 % of the time) the schedule is at 0.27, where by steps the first
    # plan would have ended it; it falls all the way.
    assert factors[99] == pytest.approx(schedule_factor(0.65))
    assert factors == sorted(factors, reverse=True)


def test_a_pace_that_slows_down_midway_ends_the_schedule_at_the_deadline_too() -> None:
    # 1 s steps up to step 32, 2 s ones after: step 66 ends at 99 s and no other fits.
    budget = StepBudget(seconds=120, deadline=100, cap=1000, clock=_steps_taking(32, 1.0, 2.0))
    stopped_at, plans, _ = _run_recording(budget)
    assert plans[3] == 101 and stopped_at == budget.planned == 66
    assert budget.lr_factor(stopped_at) < 1e-3 and budget.hit_deadline


def test_the_schedule_spans_the_cap_until_timed_then_the_time_to_the_deadline() -> None:
    budget = StepBudget(seconds=60, deadline=21, cap=400, clock=TickingClock(1.0))
    budget.clock()  # the training starts at 0
    assert budget.lr_factor(0) == 1.0 and budget.horizon == 400
    assert budget.lr_factor(200) == pytest.approx(0.5)  # by steps, over the cap
    for step in range(1, 12):  # step 1 ends at 1 s; step 11 at 11 s: half of 1 → 21 s
        budget.after_step(step)
    assert budget.lr_factor(11) == pytest.approx(0.5)
    assert budget.lr_factor(300) == pytest.approx(cosine_factor(300, 400))  # the cap leads


def test_the_warm_up_is_a_share_of_the_run() -> None:
    assert schedule_factor(0.05, 0.1) == pytest.approx(0.5)
    assert schedule_factor(0.1, 0.1) == 1.0
    assert schedule_factor(0.55, 0.1) == pytest.approx(0.5)
    assert schedule_factor(1.0, 0.1) == schedule_factor(2.0) == 0.0


def test_the_reserve_after_training_grows_with_the_budget_and_has_a_floor() -> None:
    assert save_reserve_s(10) == 5.0
    assert save_reserve_s(300) == pytest.approx(45.0)
    assert cosine_factor(5, 0) == 0.0


def _budget_run(tmp_path: Path, table: DataTable, tick: float) -> tuple[dict, list[dict]]:
    config = TrainConfig(
        base_model="tiny",
        block_size=32,
        batch_size=4,
        learning_rate=2e-3,
        time_budget_s=60,
        likeness_samples=0,
    )
    stream = io.StringIO()
    info = train_model(
        table, config, ModelStore(tmp_path), JsonProgress(stream), clock=TickingClock(tick)
    )
    record = json.loads((info.path / "training.json").read_text())
    return record, [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_budgeted_training_plans_its_steps_and_its_schedule_ends_at_the_deadline(
    tmp_path: Path, sample_table: DataTable
) -> None:
    # Clock readings: the start (0), around the evaluation before training (so it "took" one
    # tick; the one after may take half as long again), then one per step. With a 1 s tick:
    # the reserve is 1.5 + 9 s, the training deadline 49.5 s; step k ends at k + 2 s, so step
    # 47 is the last that ends before the deadline.
    record, events = _budget_run(tmp_path / "slow", sample_table, tick=1.0)
    budget, metrics = record["budget"], record["metrics"]
    assert budget["cap_steps"] > 100  # four epochs would take far longer than the budget
    assert (budget["planned_steps"], budget["step_s"], budget["reserve_s"]) == (47, 1.0, 10.5)
    assert metrics["steps"] == budget["steps"] == 47 and budget["hit_deadline"]
    assert record["config"]["time_budget_s"] == 60 and record["config"]["epochs"] == 4
    assert (record["config"]["batch_size"], record["config"]["lora_dropout"]) == (4, 0.0)
    # The learning rate of the last step follows the time at the end of the step before it
    # (timing starts at 3 s, 46.5 s before the deadline): almost 0.
    assert metrics["learning_rate_first_step"] == 2e-3
    assert metrics["learning_rate_last_step"] == pytest.approx(
        2e-3 * schedule_factor((47 - 3) / 46.5)
    )
    assert metrics["learning_rate_last_step"] < 0.01 * 2e-3

    training = [e for e in events if e["phase"] == "training"]
    assert "60-second budget" in training[0]["message"]
    steps = [e for e in training if e["step"] is not None]
    assert steps[-1]["step"] == steps[-1]["total"] == 47
    assert all(e["eta_s"] is not None for e in steps)

    # Twice the throughput: the same budget holds about twice the steps.
    faster, _ = _budget_run(tmp_path / "fast", sample_table, tick=0.5)
    assert faster["budget"]["planned_steps"] == faster["metrics"]["steps"] == 98


def test_a_budgeted_run_measures_only_the_tweet_aligned_perplexity_and_shows_it(
    tmp_path: Path, sample_table: DataTable
) -> None:
    from training.store import read_model_info

    record, _ = _budget_run(tmp_path, sample_table, tick=0.5)
    metrics = record["metrics"]
    assert metrics["perplexity_before"] is None and metrics["val_loss_after"] is None
    assert metrics["validation_blocks"] == 0
    before, after = metrics["tweet_perplexity_before"], metrics["tweet_perplexity_after"]
    assert before is not None and after is not None and after < before
    info = read_model_info(tmp_path / "alice")
    assert (info.perplexity_before, info.perplexity_after) == (before, after)
    card = (tmp_path / "alice" / "README.md").read_text(encoding="utf-8")
    assert "Validation loss before" not in card and "not measured" not in card
    assert f"| Validation perplexity (tweet-aligned blocks) before → after | {before:.3f}" in card


def test_epochs_or_a_step_cap_turn_the_default_budget_off_and_a_given_budget_wins() -> None:
    assert time_budget(None, epochs=None, max_steps=None, default=300) == 300
    assert time_budget(None, epochs=2, max_steps=None, default=300) is None
    assert time_budget(None, epochs=None, max_steps=80, default=300) is None
    assert time_budget(120, epochs=2, max_steps=None, default=300) == 120
    assert time_budget(0, epochs=None, max_steps=None, default=300) is None
    assert time_budget(None, epochs=None, max_steps=None, default=0) is None
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(InputError, match=r"^--time-budget must be 0 \(none\) or more"):
            time_budget(bad, epochs=None, max_steps=None, default=300)


def test_a_step_cap_caps_a_budget_too(tmp_path: Path, sample_table: DataTable) -> None:
    config = TrainConfig(
        base_model="tiny",
        block_size=32,
        batch_size=4,
        max_steps=6,
        time_budget_s=600,
        likeness_samples=0,
    )
    info = train_model(
        sample_table,
        config,
        ModelStore(tmp_path),
        JsonProgress(io.StringIO()),
        clock=TickingClock(1.0),
    )
    record = json.loads((info.path / "training.json").read_text())
    assert record["budget"]["cap_steps"] == record["metrics"]["steps"] == 6


def test_a_budget_that_is_not_a_positive_number_is_refused() -> None:
    for bad in (0.0, -5.0, math.nan):
        with pytest.raises(InputError, match=r"^The time budget must be a positive number"):
            TrainConfig(time_budget_s=bad).validate()


def test_the_device_is_waited_for_only_at_the_timing_readings() -> None:
    synced: list[int] = []
    clock = TickingClock(1.0)
    budget = StepBudget(
        seconds=60, deadline=50, cap=1000, clock=clock, sync=lambda: synced.append(int(clock.now))
    )
    _run_steps(budget)
    # Before the readings that end step 1 (timing starts), 4 (the first measure), 8, 16 and 32
    # (measured again; training ends at step 50).
    assert synced == [0, 3, 7, 15, 31]
