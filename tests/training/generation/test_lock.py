"""Which generations run at the same time (training.generation.lock), proven with barriers.

A barrier of two inside the backends' ``sample`` is passed only if both threads are sampling at
once; a lock that serialised them would leave the first waiting until the barrier breaks. No
timing is measured: the barrier's timeout only turns a hang into a failure.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.training.generation.tiny_models import GENERIC_TWEETS, write_records
from training.basemodels import build_tiny_model
from training.generation import GenerationSettings, TweetGenerator, backends, fast, fast_build

pytest.importorskip("ctranslate2")

#: These tests are about the CTranslate2 path, which ``auto`` tries after llama.cpp.
pytestmark = pytest.mark.usefixtures("ctranslate2_engine")

SHORT = GenerationSettings(max_length=40)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """alice, bob (a copy: the same tokenizer files, so one shared tokenizer) and carol."""
    root = tmp_path_factory.mktemp("concurrent")
    alice = build_tiny_model(GENERIC_TWEETS, root / "alice")
    write_records(alice, GENERIC_TWEETS)
    TweetGenerator.load(alice, device="cpu")  # builds alice's fast artifact once
    bob = root / "bob"
    shutil.copytree(alice, bob)
    carol = root / "carol"
    shutil.copytree(alice, carol)
    return alice, bob, carol


def _in_two_threads(calls: list[Callable[[], Any]]) -> list[BaseException | None]:
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            calls[index]()
        except BaseException as error:  # reported to the test
            errors[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def _barrier_in(monkeypatch: pytest.MonkeyPatch, owner: Any, timeout_s: float) -> threading.Barrier:
    """Make each thread's first ``owner.sample`` call wait at a barrier of two."""
    barrier = threading.Barrier(2, timeout=timeout_s)
    real = owner.sample
    waited: set[int] = set()

    def sample(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, "sample", sample)
    return barrier


def test_two_fast_models_sample_at_the_same_time(
    two_models: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_dir, bob_dir, _ = two_models
    alice = TweetGenerator.load(alice_dir, device="cpu")
    bob = TweetGenerator.load(bob_dir, device="cpu")
    assert alice.backend == bob.backend == "ctranslate2"
    assert alice._tokenizer is bob._tokenizer  # shared, and still no global lock
    for generator in (alice, bob):  # a generator's first sampling seeds its thread (a lock)
        generator.generate("I think", settings=SHORT)
    barrier = _barrier_in(monkeypatch, fast._FastSampler, timeout_s=60)
    results: dict[str, list[str]] = {}
    errors = _in_two_threads(
        [
            lambda: results.update(alice=alice.generate("I think", settings=SHORT).tweets),
            lambda: results.update(bob=bob.generate("Maybe", settings=SHORT).tweets),
        ]
    )
    assert errors == [None, None]
    assert not barrier.broken
    assert results["alice"][0].startswith("I think") and results["bob"][0].startswith("Maybe")


def test_torch_models_take_turns_on_the_global_random_generator(
    two_models: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_dir, _, carol_dir = two_models
    alice = TweetGenerator.load(alice_dir, device="cpu", backend="torch")
    carol = TweetGenerator.load(carol_dir, device="cpu", backend="torch")
    barrier = _barrier_in(monkeypatch, backends.TorchBackend, timeout_s=1)
    errors = _in_two_threads(
        [
            lambda: alice.generate("I think", seed=1, settings=SHORT),
            lambda: carol.generate("I think", seed=1, settings=SHORT),
        ]
    )
    # The second never reached the barrier while the first waited at it.
    assert barrier.broken
    assert all(isinstance(e, threading.BrokenBarrierError) for e in errors)


def test_seeded_fast_calls_repeat_while_other_models_sample_unseeded(
    two_models: tuple[Path, Path, Path],
) -> None:
    alice_dir, bob_dir, carol_dir = two_models
    alice = TweetGenerator.load(alice_dir, device="cpu")
    expected = alice.generate("I think", n=3, seed=11, settings=SHORT).tweets
    assert expected
    stop = threading.Event()
    busy = threading.Event()
    failures: list[BaseException] = []

    def load_and_sample(folder: Path) -> None:
        try:
            # A freshly loaded model: its first sampling seeds its CTranslate2 thread too.
            generator = TweetGenerator.load(folder, device="cpu")
            while not stop.is_set():
                generator.generate("Today", n=2, settings=SHORT)
                busy.set()
        except BaseException as error:  # reported to the test
            failures.append(error)
            busy.set()

    threads = [threading.Thread(target=load_and_sample, args=(f,)) for f in (bob_dir, carol_dir)]
    for thread in threads:
        thread.start()
    try:
        assert busy.wait(120)
        for _ in range(3):
            assert alice.generate("I think", n=3, seed=11, settings=SHORT).tweets == expected
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    assert failures == []


def _train_lora(store: Any, sample_table: Any, steps: int) -> Path:
    import io

    from training.progress import JsonProgress
    from training.train import TrainConfig, train_model

    config = TrainConfig(
        base_model="tiny", lora=True, epochs=1, block_size=64, batch_size=8, max_steps=steps
    )
    info = train_model(sample_table, config, store, JsonProgress(io.StringIO()))
    moved = Path(info.path).with_name(f"lora{steps}")
    Path(info.path).rename(moved)
    return moved


@pytest.fixture(scope="module")
def lora_pair(tmp_path_factory: pytest.TempPathFactory, sample_table: Any) -> tuple[Path, Path]:
    """Two LoRA models trained on one tiny base (so they share it on the torch backend)."""
    from training.store import ModelStore

    store = ModelStore(tmp_path_factory.mktemp("concurrent-lora"))
    with pytest.MonkeyPatch.context() as patch:  # torch serves them here: no fast artifact
        patch.setattr(fast_build, "prepare_fast_artifact", lambda folder, announce=None: None)
        first = _train_lora(store, sample_table, 1)
        second = _train_lora(store, sample_table, 3)
    return first, second


def test_lora_handles_on_one_shared_base_match_sequential_from_threads(
    lora_pair: tuple[Path, Path],
) -> None:
    a, b = (TweetGenerator.load(f, device="cpu", backend="torch") for f in lora_pair)
    assert a.is_lora and b.is_lora and a.model is b.model  # one base, two adapters
    jobs = [(g, seed) for seed in range(3) for g in (a, b)]
    expected = [g.generate("I", n=2, seed=s, settings=SHORT) for g, s in jobs]
    results: list[Any] = [None] * len(jobs)
    sizes: list[int] = []

    def run(index: int) -> None:
        generator, seed = jobs[index]
        results[index] = generator.generate("I", n=2, seed=seed, settings=SHORT)
        sizes.append(generator.memory_bytes)  # reads the base while others switch adapters

    errors = _in_two_threads([lambda i=i: run(i) for i in range(len(jobs))])
    assert errors == [None] * len(jobs)
    assert results == expected
    assert len(sizes) == len(jobs) and all(size > 0 for size in sizes)
