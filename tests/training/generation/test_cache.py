"""The per-process cache of loaded generators (get_generator)."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from training.errors import ModelError
from training.generation import (
    TweetGenerator,
    get_generator,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_get_generator_loads_a_model_once(tiny_dir: Path) -> None:
    first = get_generator(tiny_dir, device="cpu", backend="torch")
    assert get_generator(tiny_dir / ".." / tiny_dir.name, device="cpu", backend="torch") is first


def test_get_generator_reloads_a_retrained_model(tiny_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_dir, tmp_path / "alice")
    first = get_generator(folder, device="cpu")
    record = folder / "training.json"
    stamp = record.stat().st_mtime_ns + 5_000_000_000
    os.utime(record, ns=(stamp, stamp))
    second = get_generator(folder, device="cpu")
    assert second is not first
    assert get_generator(folder, device="cpu") is second


def test_get_generator_reloads_a_folder_replaced_atomically(tiny_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_dir, tmp_path / "alice")
    first = get_generator(folder, device="cpu")
    staged = shutil.copytree(tiny_dir, tmp_path / ".staging-alice", copy_function=shutil.copy2)
    aside = tmp_path / ".replaced-alice"
    os.replace(folder, aside)
    os.replace(staged, folder)
    shutil.rmtree(aside)
    assert get_generator(folder, device="cpu") is not first


def test_get_generator_is_safe_to_call_from_many_threads(tiny_dir: Path) -> None:
    barrier = threading.Barrier(4)

    def load(_: int) -> TweetGenerator:
        barrier.wait()
        return get_generator(tiny_dir, device="cpu")

    with ThreadPoolExecutor(max_workers=4) as pool:
        generators = list(pool.map(load, range(4)))
    assert all(g is generators[0] for g in generators)


def test_get_generator_on_a_missing_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        get_generator(tmp_path / "gone", device="cpu")
