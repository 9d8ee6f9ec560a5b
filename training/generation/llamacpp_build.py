"""Making a model's llama.cpp files and checking them.

A base model is written once, in Q8_0, to ``<store>/.bases/llamacpp/<identity>.gguf`` (under a
file lock, renamed into place); a LoRA model's adapter goes to ``llamacpp/adapter.gguf`` in f16, a
model with weights of its own to ``llamacpp/model.gguf``. ``llamacpp/source.json`` records what the
folder was made from and the quality check (llama.cpp against torch float32 on held-out tweets);
docs/generation.md describes the files and the check. :mod:`training.generation.llamacpp` runs them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.generation.artifact import blocks, check_texts, source_stamp, torch_nll
from training.generation.llamacpp import (
    ADAPTER_FILE,
    BASES_SUBDIR,
    ENGINE_DIR,
    KIND,
    MODEL_FILE,
    LlamaUnavailable,
    llamacpp_installed,
    score,
)
from training.generation.settings import ADAPTER_CONFIG

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_RECORD = "source.json"
#: The quality check scores at most this many held-out blocks of min(128, context) tokens.
_CHECK_BLOCKS, _CHECK_BLOCK_TOKENS = 16, 128


def _max_increase_pct() -> float:
    from training.config import get_settings

    return float(get_settings().llamacpp_max_ppl_increase_pct)


def _folder_stamp(folder: Path) -> str:
    """Sizes and times of a base folder's weight files (a changed base is a new identity)."""
    parts = []
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"):
        file = folder / name
        if file.is_file():
            stat = file.stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ",".join(parts)


def base_identity(base_name: str, model_dir: Path, texts: list[str]) -> tuple[str, str]:
    """(what to load the base from, the digest naming its Q8_0 file)."""
    from training.generation.gguf_files import WRITER_VERSION
    from training.generation.pool import base_source

    source, key = base_source(base_name, model_dir, texts)
    folder = Path(source)
    stamp = _folder_stamp(folder) if folder.is_dir() else ""
    digest = hashlib.sha256(f"{key}\0{stamp}\0{WRITER_VERSION}\0Q8_0".encode()).hexdigest()[:32]
    return source, digest


def base_file(models_root: Path, digest: str, make: Callable[[Path], None]) -> Path:
    """``<models_root>/.bases/llamacpp/<digest>.gguf``, made by ``make(temporary path)`` when
    missing: under an exclusive file lock (another process making it is waited for) and renamed
    into place when complete."""
    from training.basemodels import BASES_DIR

    folder = models_root / BASES_DIR / BASES_SUBDIR
    target = folder / f"{digest}.gguf"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{digest}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if target.is_file():
                return target
            temporary = folder / f".{digest}-{secrets.token_hex(4)}.tmp"
            try:
                make(temporary)
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def read_record(model_dir: Path) -> dict[str, Any] | None:
    """The model's llama.cpp record when it was made from the model's current weights."""
    try:
        record = json.loads((model_dir / ENGINE_DIR / _RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("stamp") != source_stamp(model_dir):
        return None
    check = record.get("check")
    if not isinstance(check, dict) or check.get("bound_pct") != _max_increase_pct():
        return None
    return record


def build_artifact(
    model_dir: Path, *, base_name: str | None, texts: list[str], models_root: Path | None = None
) -> dict[str, Any]:
    """Write ``model_dir``'s llama.cpp files (and its base's, when missing), run the quality
    check and return the record. Made beside the model and renamed into place whole.

    Raises :class:`LlamaUnavailable` when the model cannot be written for llama.cpp; a model
    that fails the check gets a record that says so (``serves`` false).
    """
    import torch

    from training.generation.folder import read_training_record
    from training.generation.gguf_files import GGUFUnsupported, write_adapter, write_base
    from training.generation.sharing import shared_tokenizer

    if not llamacpp_installed():
        raise LlamaUnavailable("llama-cpp-python is not installed")
    root = models_root or model_dir.parent
    stamp = source_stamp(model_dir)
    work = model_dir / f".llamacpp-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        from training.dataset import recorded_separator_id

        tokenizer = shared_tokenizer(model_dir)
        eos_id = recorded_separator_id(read_training_record(model_dir), tokenizer)
        out = work / ENGINE_DIR
        out.mkdir()
        record: dict[str, Any] = {"stamp": stamp}
        if base_name:
            from peft import PeftModel

            from training.basemodels import load_base_model

            source, digest = base_identity(base_name, model_dir, texts)
            base, base_tokenizer = load_base_model(
                source, texts=texts, models_dir=root, device=torch.device("cpu")
            )
            base.eval()
            base_path = base_file(
                root,
                digest,
                lambda path: write_base(base, base_tokenizer, eos_id, path, name=base_name),
            )
            write_adapter(model_dir, base.config, out / ADAPTER_FILE)
            reference = PeftModel.from_pretrained(base, model_dir).eval()
            record.update(kind="lora", base=base_path.name)
            weights, adapter = base_path, out / ADAPTER_FILE
        else:
            from training.generation.pool import load_full

            reference = load_full(model_dir, torch.device("cpu"))
            write_base(reference, tokenizer, eos_id, out / MODEL_FILE, name=model_dir.name)
            record.update(kind="full")
            weights, adapter = out / MODEL_FILE, None
        from training.generation.backends import max_positions_of

        record["max_positions"] = max_positions_of(reference.config)
        _, held_out = check_texts(model_dir, texts)
        record["check"] = _quality_check(reference, weights, adapter, tokenizer, held_out)
        record["serves"] = bool(record["check"].get("passed"))
        (out / _RECORD).write_text(json.dumps(record), encoding="utf-8")
        final = model_dir / ENGINE_DIR
        if final.exists():
            stale = model_dir / f".llamacpp-stale-{secrets.token_hex(4)}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(out, final)
        return record
    except GGUFUnsupported as error:
        # Final for these weights: the record says why, and no later load tries again.
        record = {
            "stamp": stamp,
            "serves": False,
            "check": {"bound_pct": _max_increase_pct(), "passed": False, "reason": str(error)},
        }
        final = model_dir / ENGINE_DIR
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir()
        (final / _RECORD).write_text(json.dumps(record), encoding="utf-8")
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _quality_check(
    reference: Any,
    weights: Path,
    adapter: Path | None,
    tokenizer: PreTrainedTokenizerBase,
    held_out: list[str],
) -> dict[str, Any]:
    """Perplexity of ``held_out`` under llama.cpp against the torch float32 ``reference``."""
    from training.generation.backends import max_positions_of

    bound = _max_increase_pct()
    size = min(_CHECK_BLOCK_TOKENS, max_positions_of(reference.config))
    rows = blocks(held_out, tokenizer, size)[:_CHECK_BLOCKS]
    count = sum(len(row) - 1 for row in rows)
    if count == 0:
        return {"bound_pct": bound, "passed": False, "reason": "no held-out tweets to measure"}
    expected = torch_nll(reference, rows)
    measured = score(weights, adapter, rows)
    increase = 100 * math.expm1((measured - expected) / count)
    return {
        "bound_pct": bound,
        "passed": abs(increase) <= bound,
        "ppl_increase_pct": round(increase, 3),
        "torch_ppl": round(math.exp(expected / count), 3),
        "llamacpp_ppl": round(math.exp(measured / count), 3),
        "scored_tokens": count,
    }


def prepare(
    model_dir: Path,
    announce: Callable[[str], None] | None = None,
    *,
    models_root: Path | None = None,
) -> dict[str, Any] | None:
    """Make ``model_dir``'s llama.cpp files now (at save time) when llama.cpp would serve it;
    the record, or None when it is not wanted or cannot be made. Never raises: the model is
    served by the next path (or converted again on its first load)."""
    from training.config import get_settings
    from training.generation.folder import read_dataset, read_training_record
    from training.generation.pool import recorded_base

    try:
        if get_settings().generation_backend not in ("auto", KIND) or not llamacpp_installed():
            return None
        existing = read_record(model_dir)
        if existing is not None:
            return existing
        record = read_training_record(model_dir)
        texts = [text for _, text in read_dataset(model_dir)]
        base_name = recorded_base(record) if (model_dir / ADAPTER_CONFIG).is_file() else None
        if announce is not None:
            announce(
                "preparing fast CPU generation: writing the llama.cpp files and checking them "
                "against float32 on held-out tweets"
            )
        return build_artifact(model_dir, base_name=base_name, texts=texts, models_root=models_root)
    except Exception as error:  # any failure only means: the next path serves the model
        log.warning("The llama.cpp files of %s were not made: %s", model_dir.name, error)
        return None


def _refusal(record: dict[str, Any]) -> str:
    check = record.get("check") or {}
    return str(
        check.get("reason")
        or f"+{check.get('ppl_increase_pct')} % perplexity, over {check.get('bound_pct')} %"
    )


def engine_line(model_dir: Path) -> str:
    """Which engine serves ``model_dir`` on this machine's CPU, and why not llama.cpp when it
    was refused (``!models``): e.g. ``llama.cpp`` or ``torch (llama.cpp: +2.1 % perplexity,
    over 1.0 %)``."""
    from training.config import get_settings
    from training.generation.fast import fast_installed

    choice = get_settings().generation_backend
    record = read_record(model_dir)
    serves = record is None or bool(record.get("serves"))
    if choice in ("auto", KIND) and llamacpp_installed() and serves:
        return "llama.cpp"
    fallback = "CTranslate2" if choice in ("auto", "ctranslate2") and fast_installed() else "torch"
    if record is not None and not record.get("serves") and choice in ("auto", KIND):
        return f"{fallback} (llama.cpp: {_refusal(record)})"
    return fallback


def card_text(record: dict[str, Any] | None) -> str:
    """The model card's sentence about CPU generation with llama.cpp."""
    if record is None:
        return "llama.cpp files were not made for this model; CTranslate2 or torch serves it."
    check = record.get("check") or {}
    if record.get("serves"):
        shape = (
            "a shared Q8_0 base with this model's LoRA applied at run time"
            if record.get("kind") == "lora"
            else "its own Q8_0 weights"
        )
        return (
            f"On a CPU llama.cpp serves it ({shape}): {check.get('ppl_increase_pct')} % "
            f"perplexity over float32 on {check.get('scored_tokens')} held-out tokens "
            f"(bound {check.get('bound_pct')} %)."
        )
    return f"llama.cpp does not serve it ({_refusal(record)}); CTranslate2 or torch does."
