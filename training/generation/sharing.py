"""Tokenizers shared between loaded models, and each tokenizer's decoded vocabulary."""

from __future__ import annotations

import hashlib
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import ModelError
from training.generation.settings import TOKENIZER_FILES

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Each tokenizer's tokens decoded one by one (for token healing), shared while it lives.
_TOKEN_TEXTS: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def token_texts(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The text of every token id of ``tokenizer`` (special tokens as ""); call under its
    :func:`~training.generation.lock.tokenizer_lock`."""
    texts = _TOKEN_TEXTS.get(tokenizer)
    if texts is None:
        ids = [[i] for i in range(len(tokenizer))]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        _TOKEN_TEXTS[tokenizer] = texts
    return texts


_TOKENIZERS: weakref.WeakValueDictionary[str, PreTrainedTokenizerBase] = (
    weakref.WeakValueDictionary()
)
_TOKENIZERS_LOCK = threading.Lock()


def shared_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer in ``path``, shared with every loaded model whose tokenizer files are equal.

    Every model folder carries its base's tokenizer, so LoRA handles on one base would otherwise
    each hold an identical copy. Every use of a
    tokenizer holds its :func:`~training.generation.lock.tokenizer_lock`, so sharing one between
    generators is safe.
    """
    from transformers import AutoTokenizer

    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    key = digest.hexdigest()
    with _TOKENIZERS_LOCK:
        tokenizer = _TOKENIZERS.get(key)
        if tokenizer is not None:
            return tokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelError(
                f"The model in {path} has no usable tokenizer files; train it again."
            ) from error
        _TOKENIZERS[key] = tokenizer
        return tokenizer
