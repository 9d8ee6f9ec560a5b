"""Making a model's CTranslate2 artifact (``fast/``): the conversion, with a LoRA adapter merged
into a fresh copy of its base first, and under ``auto`` the int8 check that picks the weight type
(docs/generation.md, "Backends"). :mod:`training.generation.fast` runs what this makes."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.generation.artifact import blocks, check_texts, source_stamp, torch_nll
from training.generation.fast import (
    LEGACY_QUANTIZATION,
    SOURCE_FILE,
    FastUnavailable,
    fast_installed,
)
from training.generation.settings import ADAPTER_CONFIG, TOKENIZER_FILES

log = logging.getLogger(__name__)

#: The fast artifact's folder inside a model folder.
FAST_DIR = "fast"
#: Written when a model cannot be converted (so loads stop trying), beside ``fast/``.
FAST_FAILED = "fast.failed"
#: The setting's value that chooses the weight type per model by measurement.
AUTO = "auto"
#: The auto check: at most this many blocks of held-out tweets are scored, and at most this many
#: training blocks calibrate the smoothing (of min(128, the model's context) tokens each).
_CHECK_BLOCKS, _CALIBRATION_BLOCKS, _CHECK_BLOCK_TOKENS = 16, 8, 128


def fast_quantization() -> str:
    """The weight type fast artifacts are made with (``DOPPELTWEET_FAST_QUANTIZATION``)."""
    from training.config import get_settings

    return get_settings().fast_quantization


def _max_increase_pct() -> float:
    from training.config import get_settings

    return float(get_settings().fast_max_ppl_increase_pct)


def artifact_quantization(folder: Path) -> str | None:
    """The weight type the artifact in ``folder`` was made with; None when it has no record."""
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(source, dict):
        return None
    quantization = source.get("quantization", LEGACY_QUANTIZATION)
    return quantization if isinstance(quantization, str) else None


def fast_artifact(model_dir: Path, quantization: str | None = None) -> Path | None:
    """``model_dir/fast`` when it holds an artifact made from this model's current weights with
    ``quantization`` (default: the setting's weight type)."""
    folder = model_dir / FAST_DIR
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(source, dict) or source.get("stamp") != source_stamp(model_dir):
        return None
    wanted = quantization or fast_quantization()
    if wanted == AUTO:
        # Chosen by the check, against the bound that is set now.
        check = source.get(AUTO)
        if not isinstance(check, dict) or check.get("bound_pct") != _max_increase_pct():
            return None
    elif source.get("quantization", LEGACY_QUANTIZATION) != wanted:
        return None
    return folder if (folder / "model.bin").is_file() else None


def conversion_failed(model_dir: Path) -> bool:
    """Whether converting this model (these weights) failed before."""
    try:
        return (model_dir / FAST_FAILED).read_text(encoding="utf-8").split("\n")[0] == (
            source_stamp(model_dir)
        )
    except (OSError, UnicodeDecodeError):
        return False


def build_fast_artifact(
    model_dir: Path, *, base_name: str | None, texts: list[str], quantization: str | None = None
) -> Path:
    """Convert ``model_dir`` to CTranslate2 in ``model_dir/fast`` and return that folder.

    ``quantization`` is the weight type (default: ``DOPPELTWEET_FAST_QUANTIZATION``; ``auto``
    measures int8 against float32 first, see the module docstring); one this CPU cannot compute
    in raises :class:`FastUnavailable` without noting a failure, so another setting is tried
    again.

    A LoRA model (``base_name`` names its base) is merged into a fresh copy of the base first;
    the shared base other models use is never touched. Written beside the model and renamed into
    place, so a crash leaves no half artifact. Raises :class:`FastUnavailable` (and notes the
    failure in ``fast.failed``) when the model cannot be converted.
    """
    if not fast_installed():
        raise FastUnavailable("ctranslate2 is not installed")
    quantization = quantization or fast_quantization()
    if quantization != AUTO:
        _check_quantization(quantization)
    stamp = source_stamp(model_dir)
    work = model_dir / f".fast-{secrets.token_hex(4)}"
    try:
        work.mkdir()
        source = _merged_copy(model_dir, base_name, texts, work) if base_name else model_dir
        max_positions = _max_positions(source)
        out = work / FAST_DIR
        record: dict[str, Any] = {"stamp": stamp, "max_positions": max_positions}
        if quantization == AUTO:
            record.update(_convert_auto(model_dir, source, work, out, texts, max_positions))
        else:
            _convert(_with_full_vocabulary(source, work), out, quantization)
            record["quantization"] = quantization
        (out / SOURCE_FILE).write_text(json.dumps(record), encoding="utf-8")
        final = model_dir / FAST_DIR
        if final.exists():
            stale = model_dir / f".fast-stale-{secrets.token_hex(4)}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(out, final)
        (model_dir / FAST_FAILED).unlink(missing_ok=True)
        return final
    except FastUnavailable as error:
        _note_failure(model_dir, stamp, str(error))
        raise
    except Exception as error:  # the converter raises many kinds for one cause: cannot convert
        _note_failure(model_dir, stamp, f"{type(error).__name__}: {error}")
        raise FastUnavailable(f"the model cannot be converted ({type(error).__name__})") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_quantization(quantization: str) -> None:
    """Refuse a weight type CTranslate2 does not know or this CPU cannot compute in."""
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types("cpu")
    if quantization not in supported:
        raise FastUnavailable(
            f"this CPU cannot compute in {quantization!r} with CTranslate2 "
            f"(it can: {', '.join(sorted(supported))}); set DOPPELTWEET_FAST_QUANTIZATION"
        )


def _note_failure(model_dir: Path, stamp: str, reason: str) -> None:
    try:
        (model_dir / FAST_FAILED).write_text(f"{stamp}\n{reason[:500]}\n", encoding="utf-8")
    except OSError:
        log.warning("Could not note the failed conversion of %s.", model_dir.name)


def _max_positions(folder: Path) -> int:
    from transformers import AutoConfig

    from training.generation.backends import max_positions_of

    return max_positions_of(AutoConfig.from_pretrained(folder))


def _with_full_vocabulary(source: Path, work: Path, name: str = "full-vocabulary") -> Path:
    """``source``, or a view of it whose tokenizer names every embedding row.

    CTranslate2 wants one vocabulary entry per embedding row; a model whose embedding has more
    rows than its tokenizer has tokens (padded to a round size, or a tokenizer from another
    model) gets placeholder tokens for the rows no text reaches. The weights are linked, not
    copied; ``source`` itself is never changed.
    """
    from transformers import AutoConfig, AutoTokenizer

    rows = int(getattr(AutoConfig.from_pretrained(source), "vocab_size", 0) or 0)
    tokenizer = AutoTokenizer.from_pretrained(source)
    missing = rows - len(tokenizer)
    if missing <= 0:
        return source
    view = work / name
    view.mkdir()
    for file in source.iterdir():
        if file.is_file() and file.name not in TOKENIZER_FILES:
            (view / file.name).symlink_to(file.resolve())
    tokenizer.add_tokens([f"<doppeltweet_unused_{i}>" for i in range(missing)])
    tokenizer.save_pretrained(view)
    return view


def _merged_copy(model_dir: Path, base_name: str, texts: list[str], work: Path) -> Path:
    """A full model folder: a fresh copy of the base with the adapter merged in (fp32)."""
    import torch
    from peft import PeftModel

    from training.basemodels import load_base_model
    from training.generation.pool import base_source

    source, _ = base_source(base_name, model_dir, texts)
    base, _ = load_base_model(
        source, texts=texts, models_dir=model_dir.parent, device=torch.device("cpu")
    )
    merged = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    folder = work / "merged"
    merged.save_pretrained(folder)
    _copy_tokenizer(model_dir, folder)
    del merged, base
    return folder


def _copy_tokenizer(source: Path, folder: Path) -> None:
    """The tokenizer files of ``source`` into ``folder`` (a saved model the converter reads)."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)


def _convert(source: Path, out: Path, quantization: str) -> None:
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(source)).convert(str(out), quantization=quantization, force=True)


def _convert_auto(
    model_dir: Path, source: Path, work: Path, out: Path, texts: list[str], max_positions: int
) -> dict[str, Any]:
    """Convert ``source`` (a full float32 model folder) into ``out`` in int8 when, smoothed, it
    adds at most the bound to the validation perplexity, else in float32; returns the record's
    ``quantization`` and ``auto`` (the measurement) entries."""
    import ctranslate2

    bound = _max_increase_pct()
    check: dict[str, Any] = {"bound_pct": bound}
    if "int8" not in ctranslate2.get_supported_compute_types("cpu"):
        check["reason"] = "this CPU cannot compute in int8"
    else:
        check.update(_int8_check(model_dir, source, work, texts, max_positions))
        increase = check.get("int8_ppl_increase_pct")
        if isinstance(increase, float) and increase <= bound:
            os.replace(work / "int8", out)
            return {"quantization": "int8", AUTO: check}
    shutil.rmtree(work / "int8", ignore_errors=True)
    _convert(_with_full_vocabulary(source, work), out, "float32")
    return {"quantization": "float32", AUTO: check}


def _int8_check(
    model_dir: Path, source: Path, work: Path, texts: list[str], max_positions: int
) -> dict[str, Any]:
    """Smooth and convert ``source`` to int8 in ``work/int8``; measure its perplexity on held-out
    tweets against the float32 model's (torch, the same tokens)."""
    import math

    import ctranslate2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.generation.smoothing import DEFAULT_ALPHA, smooth

    tokenizer = AutoTokenizer.from_pretrained(source)
    calibration, held_out = check_texts(model_dir, texts)
    size = min(_CHECK_BLOCK_TOKENS, max_positions)
    rows = blocks(held_out, tokenizer, size)[:_CHECK_BLOCKS]
    if not rows:
        return {"reason": "no tweets to measure int8 on"}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    reference = torch_nll(model, rows)
    smoothed = smooth(model, blocks(calibration, tokenizer, size)[:_CALIBRATION_BLOCKS])
    folder = work / "smoothed"
    model.save_pretrained(folder)
    del model
    _copy_tokenizer(source, folder)
    _convert(_with_full_vocabulary(folder, work, "smoothed-full-vocabulary"), work / "int8", "int8")
    shutil.rmtree(folder, ignore_errors=True)
    generator = ctranslate2.Generator(str(work / "int8"), device="cpu", compute_type="int8")
    scored = generator.score_batch([tokenizer.convert_ids_to_tokens(row.tolist()) for row in rows])
    del generator
    count = sum(len(row) - 1 for row in rows)
    if count == 0:
        return {"reason": "no tweets to measure int8 on"}
    if [len(result.log_probs) for result in scored] != [len(row) - 1 for row in rows]:
        return {"reason": "CTranslate2 scored other tokens than torch"}
    nll = -sum(sum(result.log_probs) for result in scored)
    return {
        "int8_ppl_increase_pct": round(100 * math.expm1((nll - reference) / count), 3),
        "float32_ppl": round(math.exp(reference / count), 3),
        "int8_ppl": round(math.exp(nll / count), 3),
        "scored_tokens": count,
        "smoothed_layers": smoothed,
        "smoothing_alpha": DEFAULT_ALPHA,
    }


def _conversion_sentence(quantization: str) -> str:
    """What a conversion is doing, for a progress display."""
    if quantization == "auto":
        return (
            "preparing fast CPU generation: converting the model and checking int8 against "
            "float32 on held-out tweets"
        )
    return f"preparing fast CPU generation: converting the model to {quantization}"


def prepare_fast_artifact(
    model_dir: Path, announce: Callable[[str], None] | None = None
) -> Path | None:
    """Build ``model_dir``'s fast artifact now (right after training), when the fast backend
    would serve it; None when it is not wanted or cannot be made.

    ``announce`` is called with one sentence just before a conversion starts (it takes seconds
    to a minute: merging, converting and, under ``auto``, checking int8 against float32), so a
    progress display can say what the run is doing; it is not called when nothing is built.
    Never raises: training has succeeded whatever happens here, and a model without an artifact
    is converted on its first load instead (or served by torch).
    """
    from training.config import get_settings
    from training.generation.folder import read_dataset, read_training_record
    from training.generation.pool import recorded_base

    try:
        if get_settings().generation_backend == "torch" or not fast_installed():
            return None
        existing = fast_artifact(model_dir)
        if existing is not None or conversion_failed(model_dir):
            return existing
        record = read_training_record(model_dir)
        texts = [text for _, text in read_dataset(model_dir)]
        base_name = recorded_base(record) if (model_dir / ADAPTER_CONFIG).is_file() else None
        if announce is not None:
            announce(_conversion_sentence(fast_quantization()))
        return build_fast_artifact(model_dir, base_name=base_name, texts=texts)
    except Exception as error:  # any failure only means: convert on first load
        log.warning("The fast artifact of %s was not built: %s", model_dir.name, error)
        return None
