"""The fast CPU backend: CTranslate2, in int8 where it measures close enough to float32.

CTranslate2 has no run-time LoRA, so a model is converted once — a LoRA adapter merged into a fresh
copy of its base first — into ``fast/`` inside the model folder (the *fast artifact*, ~136 MB for
SmolLM2-135M in int8, ~540 MB in float32). The artifact records which training it was made from and
its weight type (``DOPPELTWEET_FAST_QUANTIZATION``); a retrained model is a new folder (the store
replaces it whole), and an artifact of other weights or another weight type is made again. When the
conversion is impossible (an architecture CTranslate2 does not know) a ``fast.failed`` note keeps
later loads from trying again; a missing or damaged artifact means the torch backend.

The default weight type, ``auto``, is chosen per model by measurement (:func:`_convert_auto`): the
merged model is smoothed (:mod:`training.generation.smoothing`) and converted to int8, and the
int8 artifact's perplexity on the model's own validation tweets is compared with the float32
model's in torch; int8 is kept when it adds at most ``DOPPELTWEET_FAST_MAX_PPL_INCREASE_PCT``
(3 %), float32 is made otherwise. int8's loss depends on the CPU's kernels (+2 % after smoothing
with VNNI, +15 % or more with AVX2 only: benchmarks/README.md), so no fixed type is right for
every machine. The measurement is recorded in the artifact's ``doppeltweet-source.json``.

Randomness: CTranslate2 samples with a per-thread generator seeded once when its worker thread
first samples. An unseeded call uses the model's long-lived generator (a fresh stream every
call); a seeded call gets its own short-lived generator whose worker thread first samples under
that seed, so the same seed gives the same tweets; the process-wide seed is put back to "random"
afterwards. Seeding is process-wide, so a seeded call and a generator's very first sampling hold
``_CT2_SEED_LOCK``; once its worker thread is seeded, a model's unseeded calls take no global
lock, and different models sample at the same time (each on its own CTranslate2 thread).
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.generation.settings import (
    ADAPTER_CONFIG,
    TRAINING_FILE,
    GenerationSettings,
    nucleus,
)
from training.generation.stop import _TweetEnd

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: The fast artifact's folder inside a model folder.
FAST_DIR = "fast"
#: Written when a model cannot be converted (so loads stop trying), beside ``fast/``.
FAST_FAILED = "fast.failed"
#: Inside ``fast/``: what the artifact was made from.
_SOURCE_FILE = "doppeltweet-source.json"
#: What an artifact made before the weight type was recorded holds.
_LEGACY_QUANTIZATION = "int8"
#: The setting's value that chooses the weight type per model by measurement.
AUTO = "auto"
#: The auto check: at most this many blocks of held-out tweets are scored, and at most this many
#: training blocks calibrate the smoothing (of min(128, the model's context) tokens each).
_CHECK_BLOCKS, _CALIBRATION_BLOCKS, _CHECK_BLOCK_TOKENS = 16, 8, 128
#: CTranslate2's "no seed set" value (a random seed per worker thread).
_RANDOM_SEED = 0xFFFFFFFF
#: The files a model's weights are read from; their sizes and times are part of the source stamp.
_WEIGHT_FILES = (
    ADAPTER_CONFIG,
    "adapter_model.safetensors",
    "adapter_model.bin",
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
)
#: Tokenizer files a merged model needs for the converter.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


class FastUnavailable(Exception):
    """The fast backend cannot serve this model (the message says why); use torch."""


def fast_installed() -> bool:
    """Whether the ``ctranslate2`` package is installed."""
    return importlib.util.find_spec("ctranslate2") is not None


def source_stamp(model_dir: Path) -> str:
    """A digest of what a fast artifact is made from: the training record and the weight files."""
    digest = hashlib.sha256()
    record = model_dir / TRAINING_FILE
    if record.is_file():
        digest.update(record.read_bytes())
    for name in _WEIGHT_FILES:
        file = model_dir / name
        if file.is_file():
            stat = file.stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


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
        source = json.loads((folder / _SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(source, dict):
        return None
    quantization = source.get("quantization", _LEGACY_QUANTIZATION)
    return quantization if isinstance(quantization, str) else None


def fast_artifact(model_dir: Path, quantization: str | None = None) -> Path | None:
    """``model_dir/fast`` when it holds an artifact made from this model's current weights with
    ``quantization`` (default: the setting's weight type)."""
    folder = model_dir / FAST_DIR
    try:
        source = json.loads((folder / _SOURCE_FILE).read_text(encoding="utf-8"))
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
    elif source.get("quantization", _LEGACY_QUANTIZATION) != wanted:
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
        (out / _SOURCE_FILE).write_text(json.dumps(record), encoding="utf-8")
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
        if file.is_file() and file.name not in _TOKENIZER_FILES:
            (view / file.name).symlink_to(file.resolve())
    tokenizer.add_tokens([f"<doppeltweet_unused_{i}>" for i in range(missing)])
    tokenizer.save_pretrained(view)
    return view


def _merged_copy(model_dir: Path, base_name: str, texts: list[str], work: Path) -> Path:
    """A full model folder: a fresh copy of the base with the adapter merged in (fp32)."""
    import torch
    from peft import PeftModel

    from training.basemodels import load_base_model
    from training.generation.pool import _base_source

    source, _ = _base_source(base_name, model_dir, texts)
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
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)


def torch_nll(model: Any, rows: list[Any]) -> float:
    """A torch model's negative log-likelihood of each row's tokens after its first (what
    CTranslate2's ``score_batch`` of the same rows scores)."""
    import torch

    with torch.inference_mode():
        return sum(
            float(
                torch.nn.functional.cross_entropy(
                    model(input_ids=row[None]).logits[0, :-1], row[1:], reduction="sum"
                )
            )
            for row in rows
        )


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
    calibration, held_out = _check_texts(model_dir, texts)
    size = min(_CHECK_BLOCK_TOKENS, max_positions)
    rows = _blocks(held_out, tokenizer, size)[:_CHECK_BLOCKS]
    if not rows:
        return {"reason": "no tweets to measure int8 on"}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    reference = torch_nll(model, rows)
    smoothed = smooth(model, _blocks(calibration, tokenizer, size)[:_CALIBRATION_BLOCKS])
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


def _check_texts(model_dir: Path, texts: list[str]) -> tuple[list[str], list[str]]:
    """(calibration, held-out) tweets: the training's own split when the folder has its data
    table and record, else ``texts`` for both."""
    from training.cleaning import DataTable
    from training.dataset import split_tweets
    from training.errors import DoppeltweetError
    from training.generation.folder import _read_training_record

    try:
        config = _read_training_record(model_dir).get("config") or {}
        split = split_tweets(
            DataTable.load(model_dir),
            float(config.get("val_fraction", 0.1)),
            seed=int(config.get("seed", 42)),
        )
    except (DoppeltweetError, OSError, ValueError, TypeError):
        return texts, texts
    train = [text for tweets in split.train.values() for text in tweets]
    return (train, split.validation) if train and split.validation else (texts, texts)


def _blocks(texts: list[str], tokenizer: PreTrainedTokenizerBase, size: int) -> list[Any]:
    """``texts`` in training's separator-joined stream, cut into blocks of ``size`` tokens."""
    from training.dataset import DatasetSplit, build_eval_blocks

    if not texts:
        return []
    return list(build_eval_blocks(DatasetSplit({}, list(texts)), tokenizer, block_size=size).blocks)


def generation_threads(quantization: str, threads: int = 0) -> int:
    """The CPU threads one generation of a model in ``quantization`` uses: ``threads`` when set
    (> 0), else 1 for int8 (its small kernels gain nothing from a second thread: 0.76 s against
    1.11 s a tweet) and up to 2 for float32 (0.5 s against 0.9 s on 2 idle cores), never more
    than this process may run on."""
    if threads > 0:
        return threads
    if quantization.startswith("int8"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, cores or 1))


#: Every open fast backend, closed before the interpreter shuts down (see :func:`_close_all`).
_OPEN: weakref.WeakSet[FastBackend] = weakref.WeakSet()
#: Whether :func:`_close_all` is registered with ``atexit`` (on the first open backend).
_closing_at_exit = False


def _close_all() -> None:
    """Drop every CTranslate2 generator while Python still runs: one left to the interpreter's
    shutdown with two or more threads aborts the process about every other time ("terminate
    called without an active exception", exit status 134), after a CLI run printed its tweets."""
    for backend in list(_OPEN):
        backend.close()
    gc.collect()


def _close_all_at_exit() -> None:
    """Register :func:`_close_all` once, on the first open backend: after ctranslate2's import,
    so it runs before anything ctranslate2 registered."""
    global _closing_at_exit
    if not _closing_at_exit:
        atexit.register(_close_all)
        _closing_at_exit = True


class FastBackend:
    """Samples with CTranslate2 (CPU, in the artifact's weight type); see the module docstring."""

    kind = "ctranslate2"

    def __init__(
        self, folder: Path, tokenizer: PreTrainedTokenizerBase, eos_id: int, *, threads: int = 0
    ) -> None:
        self.folder = folder
        self.eos_id = eos_id
        try:
            source = json.loads((folder / _SOURCE_FILE).read_text(encoding="utf-8"))
            self.max_positions = int(source["max_positions"])
            self.quantization = str(source.get("quantization", _LEGACY_QUANTIZATION))
            self.threads = generation_threads(self.quantization, threads)
            self.generator: Any = self._open()
        except Exception as error:  # a damaged artifact: torch serves the model instead
            raise FastUnavailable(
                f"the fast artifact is damaged ({type(error).__name__})"
            ) from error
        from training.generation.lock import tokenizer_lock

        with tokenizer_lock(tokenizer):
            self._tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        # Whether the long-lived generator's worker thread has sampled (and so is seeded).
        self._seeded_thread = False
        self._eos_token = self._tokens[eos_id]
        self._bytes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        _OPEN.add(self)
        _close_all_at_exit()

    def _open(self) -> Any:
        import ctranslate2

        # The recorded type, not "default": CTranslate2 would silently compute in another one.
        return ctranslate2.Generator(
            str(self.folder),
            device="cpu",
            compute_type=self.quantization,
            inter_threads=1,
            intra_threads=self.threads,
        )

    @contextmanager
    def session(self, seed: int | None) -> Iterator[_FastSampler]:
        import ctranslate2
        import numpy as np

        from training.generation.lock import _CT2_SEED_LOCK

        if seed is None:
            rng = np.random.default_rng(secrets.randbits(63))
            sampler = _FastSampler(self, self.generator, rng)
            if self._seeded_thread:
                yield sampler
                return
            # The worker thread seeds itself when it first samples: not while another call's
            # seed is set (its tweets would repeat that call's).
            with _CT2_SEED_LOCK:
                self._seeded_thread = True
                yield sampler
            return
        # A worker thread seeds its generator when it first samples, so the seed stays set until
        # this call is over; seeded calls and first samplings take turns on the seed lock.
        with _CT2_SEED_LOCK:
            ctranslate2.set_random_seed(seed % _RANDOM_SEED)
            try:
                generator = self._open()
                yield _FastSampler(self, generator, np.random.default_rng(seed))
            finally:
                ctranslate2.set_random_seed(_RANDOM_SEED)

    def memory_bytes(self) -> int:
        return self._bytes

    def shared_bytes(self) -> int:
        return 0

    def shared_key(self) -> str:
        return ""

    def close(self) -> None:
        self.generator = None


class _FastSampler:
    def __init__(self, backend: FastBackend, generator: Any, rng: Any) -> None:
        self.backend = backend
        self.generator = generator
        self.rng = rng

    def sample(
        self,
        prompt_ids: list[int],
        batch: int,
        *,
        settings: GenerationSettings,
        max_length: int,
        first_tokens: list[int] | None,
        stop: _TweetEnd,
    ) -> list[list[int]]:
        tokens = self.backend._tokens
        heads = [list(prompt_ids) for _ in range(batch)]
        if first_tokens is not None:
            for row, token in enumerate(self._first(prompt_ids, batch, settings, first_tokens)):
                heads[row].append(token)
                stop.push(row, token, lambda row=row: heads[row][1:])
        rows = [list(head) for head in heads]
        start = [[tokens[i] for i in head] for head in heads]
        top_k = settings.top_k if settings.top_k > 0 else len(tokens)

        def step(result: Any) -> bool:
            row = result.batch_id
            rows[row].append(result.token_id)
            return stop.push(row, result.token_id, lambda: rows[row][1:])

        results = self.generator.generate_batch(
            start,
            max_length=max(1, max_length - len(heads[0])),
            min_length=max(0, settings.min_length - len(heads[0])),
            sampling_topk=top_k if settings.do_sample else 1,
            sampling_topp=settings.top_p if settings.do_sample else 1.0,
            sampling_temperature=settings.temperature,
            include_prompt_in_result=False,
            end_token=self.backend._eos_token,
            callback=step,
        )
        return [head + result.sequences_ids[0] for head, result in zip(heads, results, strict=True)]

    def _first(
        self, prompt_ids: list[int], batch: int, settings: GenerationSettings, allowed: list[int]
    ) -> list[int]:
        """The first sampled token of each row, from ``allowed`` only (token healing), drawn
        with the call's own random generator under the same top-k/top-p/temperature rule."""
        import numpy as np

        start = [[self.backend._tokens[i] for i in prompt_ids]]
        logits = np.asarray(self.generator.forward_batch(start), dtype=np.float64)[0, -1]
        ids = np.array(allowed)
        scores = logits[ids] / settings.temperature
        if not settings.do_sample:
            return [int(ids[int(np.argmax(scores))])] * batch
        order, probs = nucleus(scores, settings)
        return [int(ids[i]) for i in self.rng.choice(order, size=batch, p=probs)]


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
    from training.generation.folder import _read_dataset, _read_training_record
    from training.generation.pool import _recorded_base

    try:
        if get_settings().generation_backend == "torch" or not fast_installed():
            return None
        existing = fast_artifact(model_dir)
        if existing is not None or conversion_failed(model_dir):
            return existing
        record = _read_training_record(model_dir)
        texts = [text for _, text in _read_dataset(model_dir)]
        base_name = _recorded_base(record) if (model_dir / ADAPTER_CONFIG).is_file() else None
        if announce is not None:
            announce(_conversion_sentence(fast_quantization()))
        return build_fast_artifact(model_dir, base_name=base_name, texts=texts)
    except Exception as error:  # any failure only means: convert on first load
        log.warning("The fast artifact of %s was not built: %s", model_dir.name, error)
        return None
