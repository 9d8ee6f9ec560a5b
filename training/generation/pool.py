"""Loaded torch models: a model of its own, or LoRA adapters on one shared base."""

from __future__ import annotations

import hashlib
import re
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import ModelError

if TYPE_CHECKING:
    import torch


class OwnModel:
    """A model folder with its own weights: nothing is shared, nothing to switch."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def activate(self) -> None:
        """Nothing to do: the weights are this model's alone."""

    def memory_bytes(self) -> int:
        return _tensor_bytes(self.model)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


class _SharedBase:
    """One base model in memory with every LoRA adapter attached to it by name.

    Adapters are attached with peft's ``load_adapter`` and made active with ``set_adapter`` before
    each generation, so N LoRA models cost one base plus N small adapters.
    """

    def __init__(self, key: tuple[str, str], base: torch.nn.Module) -> None:
        self.key = key
        self.base = base
        self.peft: Any = None
        self.adapters: set[str] = set()
        self.released: set[str] = set()
        self._counter = 0
        #: Held while an adapter is active for a generation, attached or removed (lock.py).
        self.lock = threading.RLock()

    def attach(self, adapter_dir: Path, label: str) -> str:
        """Load the adapter in ``adapter_dir`` under a fresh name and return that name."""
        from peft import PeftModel

        with self.lock:
            self._counter += 1
            name = f"{re.sub(r'[^A-Za-z0-9_]', '_', label)}_{self._counter}"
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, adapter_dir, adapter_name=name)
            else:
                self.peft.load_adapter(adapter_dir, adapter_name=name)
            self.peft.eval()
            self.adapters.add(name)
        return name

    def activate(self, name: str) -> None:
        """Make adapter ``name`` the active one (under :attr:`lock`, held while it generates)."""
        self.peft.set_adapter(name, inference_mode=True)

    def adapter_bytes(self, name: str) -> int:
        """Bytes of the parameters that belong to adapter ``name`` only."""
        seen: set[int] = set()
        total = 0
        with self.lock:
            named = list(self.peft.named_parameters())
        for param_name, tensor in named:
            if name in param_name.split(".") and tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
        return total

    def base_bytes(self) -> int:
        """Bytes of the base's own parameters and buffers (every adapter excluded)."""
        with self.lock:
            adapters = self.adapters | self.released
            named = [*self.peft.named_parameters(), *self.peft.named_buffers()]
        seen: set[int] = set()
        total = 0
        for name, tensor in named:
            if adapters & set(name.split(".")) or tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
        return total

    def drop(self, name: str) -> bool:
        """Remove adapter ``name``; True when no adapter is left (the base may then be freed)."""
        with self.lock:
            if name not in self.adapters:
                return not self.adapters
            self.adapters.discard(name)
            if self.adapters:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.peft.delete_adapter(name)
            return not self.adapters


class LoraModel:
    """A LoRA model folder: its adapter on a :class:`_SharedBase`."""

    def __init__(self, pool: _SharedBase, adapter: str) -> None:
        self.pool = pool
        self.adapter = adapter
        self.model = pool.peft

    def activate(self) -> None:
        self.pool.activate(self.adapter)

    def memory_bytes(self) -> int:
        return self.pool.adapter_bytes(self.adapter)

    def close(self) -> None:
        _release_adapter(self.pool, self.adapter)


# The base pool: (base name or resolved folder, device) -> _SharedBase. Lock order: _BASES_LOCK,
# then a base's own lock.
_BASES: dict[tuple[str, str], _SharedBase] = {}
_BASES_LOCK = threading.RLock()


def _release_adapter(pool: _SharedBase, adapter: str) -> None:
    with _BASES_LOCK:
        pool.released.discard(adapter)
        if pool.drop(adapter) and _BASES.get(pool.key) is pool:
            del _BASES[pool.key]


def mark_released(pool: _SharedBase, adapter: str) -> None:
    # Runs from a garbage-collection finaliser, possibly inside another generation on this thread,
    # so it only records the adapter; the next load removes it (see purge_released).
    pool.released.add(adapter)


def purge_released() -> None:
    with _BASES_LOCK:
        for pool in list(_BASES.values()):
            for adapter in list(pool.released):
                _release_adapter(pool, adapter)


def recorded_base(record: dict[str, Any]) -> str | None:
    name, where = record.get("base_model"), record.get("base_model_path")
    if isinstance(where, str) and where.strip() and (Path(where).is_dir() or not name):
        return where
    return name if isinstance(name, str) else None


def base_source(base_name: str, model_dir: Path, texts: list[str]) -> tuple[str, str]:
    """(what to load, the pool key): models on the same key really share identical base weights.

    A folder is keyed by its resolved path and a Hub id by itself. The built-in ``tiny`` base is
    rebuilt from the model's own tweets, so two tiny bases are the same only for the same tweets:
    its key includes a digest of them.
    """
    from training.basemodels import TINY_NAME

    name = base_name.strip()
    if name == TINY_NAME:
        digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
        return name, f"{name}:{digest}"
    candidate = Path(name).expanduser()
    if not candidate.is_absolute():
        candidate = model_dir / candidate
    if candidate.is_dir():
        resolved = str(candidate.resolve())
        return resolved, resolved
    return name, name


def attach_lora(
    model_dir: Path, base_name: str, texts: list[str], device: torch.device
) -> LoraModel:
    from safetensors import SafetensorError

    from training.basemodels import load_base_model

    source, base_key = base_source(base_name, model_dir, texts)
    key = (base_key, str(device))
    with _BASES_LOCK:
        pool = _BASES.get(key)
        if pool is None:
            base, _ = load_base_model(
                source, texts=texts, models_dir=model_dir.parent, device=device
            )
            base.eval()
            pool = _SharedBase(key, base)
            _BASES[key] = pool
        try:
            adapter = pool.attach(model_dir, model_dir.name)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
            if not pool.adapters:
                del _BASES[key]
            raise ModelError(
                f"The LoRA adapter in {model_dir} is damaged or does not fit its base model "
                f"{base_name!r}; train the model again."
            ) from error
    return LoraModel(pool, adapter)


def _tensor_bytes(module: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def load_full(path: Path, device: torch.device) -> torch.nn.Module:
    import torch
    from transformers import AutoModelForCausalLM

    if not (path / "config.json").is_file():
        raise ModelError(f"The model in {path} has no weights (no config.json); train it again.")
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise ModelError(
            f"The weights in {path} cannot be loaded; train the model again."
        ) from error
    model.to(device)
    model.eval()
    return model
