"""The per-process cache of loaded generators."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from training.errors import ModelError
from training.generation.generator import TweetGenerator
from training.generation.pool import purge_released
from training.generation.settings import DATASET_FILE, TRAINING_FILE

if TYPE_CHECKING:
    import torch

#: How many generators :func:`get_generator` keeps; the least recently used is dropped first.
CACHE_SIZE = 4

_CACHE: OrderedDict[tuple[str, str, str], tuple[tuple[int, ...], TweetGenerator]] = OrderedDict()
_CACHE_LOCK = threading.RLock()


def _folder_stamp(path: Path) -> tuple[int, ...]:
    """Changes whenever the model is retrained (the folder is replaced, training.json rewritten)."""
    try:
        folder = path.stat()
        record = path / TRAINING_FILE
        stamp = record.stat() if record.is_file() else (path / DATASET_FILE).stat()
    except OSError as error:
        raise ModelError(f"There is no model folder at {path}; train the model first.") from error
    return (folder.st_ino, stamp.st_ino, stamp.st_mtime_ns, stamp.st_size)


def get_generator(
    model_dir: Path, *, device: str | torch.device | None = None, backend: str | None = None
) -> TweetGenerator:
    """The process's generator for ``model_dir``: loaded once, reloaded after a retrain.

    Keyed by the resolved folder and its ``training.json`` modification time, so a model that was
    trained again (the folder atomically replaced) is loaded afresh and the old one released.
    """
    path = Path(model_dir).expanduser().resolve()
    key = (str(path), "" if device is None else str(device), backend or "")
    with _CACHE_LOCK:
        stamp = _folder_stamp(path)
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == stamp:
            _CACHE.move_to_end(key)
            return cached[1]
        if cached is not None:
            # Not closed: a caller may still hold the old generator; it is freed with its last
            # reference (a LoRA adapter at the next load).
            del _CACHE[key]
            cached = None
            purge_released()
        generator = TweetGenerator.load(path, device=device, backend=backend)
        _CACHE[key] = (stamp, generator)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return generator


def clear_generator_cache() -> None:
    """Forget every cached generator; each is freed once no caller holds it any more."""
    with _CACHE_LOCK:
        _CACHE.clear()
    purge_released()
