"""Text tidying (what a candidate may post) and the copy filter (what it may not repeat)."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.errors import InputError
from training.generation.settings import COPY_FILTER_FILE, DATASET_FILE, TWEET_CHARS
from training.textrules import (
    bare_links,
    collapse_punctuation,
    drop_broken_characters,
    drop_broken_emoji,
    fit_tweet,
    is_unspaced,
    strip_link_residue,
)

log = logging.getLogger(__name__)

_URL = re.compile(r"\S*(?:\bhttps?:|\bwww\.)\S*", re.IGNORECASE)
NEWLINE = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]")
LAST_SPACE = re.compile(r"\s(?=\S*$)")


#: Invisible characters that separate words (zero-width space, word joiner, BOM, Mongolian vowel
#: separator): folded to a space before matching.
_INVISIBLE_SPACES = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u180e"), " ")
#: Latin look-alikes among Cyrillic and Greek letters (lower case: matching is case-blind), so a
#: copy or a link spelled with a Cyrillic "а" or a Greek "ο" is still recognised.
_LOOKALIKES = str.maketrans(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u04bb\u051b\u051d"
    "\u0261\u03bf\u03b1\u03bd\u03c1\u03b9\u03ba\u03c5\u03c7\u0432\u043a\u043c\u043d\u0442",
    "aeopcyxijsdhqwgoavpikuxbkmht",
)


def fold_lookalikes(text: str, *, joined: bool = False) -> str:
    """``text`` as it reads: invisible format characters out, look-alike letters made Latin.

    Zero-width spaces and their kin become spaces (or vanish with ``joined``, for a word split by
    one); every other format character (Unicode Cf: zero-width joiners, soft hyphens, direction
    marks) is removed; NFKC folds compatibility forms (full-width letters, ligatures); Cyrillic
    and Greek letters that look Latin become Latin. Only for matching: what is posted keeps its
    characters (an emoji's zero-width joiners included).
    """
    if not joined:
        text = text.translate(_INVISIBLE_SPACES)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", text).casefold().translate(_LOOKALIKES)


def normalized_words(text: str, *, joined: bool = False) -> list[str]:
    """Words compared case-, punctuation- and whitespace-blind, so "Hello, World!" == "hello world".

    Punctuation (Unicode category P*, which includes ``@`` and ``#``) becomes a space; emoji and
    other symbols stay, as they carry meaning in tweets. Invisible characters and look-alike
    letters are folded first (:func:`fold_lookalikes`).
    """
    folded = fold_lookalikes(text, joined=joined)
    spaced = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in folded)
    return spaced.split()


def normalize(text: str) -> str:
    """The comparison key of a text: :func:`normalized_words` joined by single spaces."""
    return " ".join(normalized_words(text))


def _word_char(char: str) -> bool:
    """Whether ``char`` belongs inside a word: a letter, digit, mark or connector (``_``)."""
    return unicodedata.category(char)[0] in "LNM" or char == "_"


def last_word(prompt: str) -> str:
    """The word ``prompt`` ends with (empty when it ends in a space, punctuation or a letter of
    a script written without spaces, after which any character starts a new word)."""
    last = prompt[-1:]
    if not last or not _word_char(last) or is_unspaced(last):
        return ""
    start = len(prompt)
    while start and _word_char(prompt[start - 1]) and not is_unspaced(prompt[start - 1]):
        start -= 1
    return prompt[start:]


def glues(text: str, continuation: str) -> bool:
    """Whether ``continuation`` extends ``text``'s last word (``I`` + ``t's``) instead of starting
    at a word boundary (a space, punctuation, nothing, or a script written without spaces)."""
    if not text or not continuation:
        return False
    last, first = text[-1], continuation[0]
    return (
        _word_char(last) and _word_char(first) and not is_unspaced(last) and not is_unspaced(first)
    )


def tidy_candidate(text: str, max_chars: int = TWEET_CHARS) -> str:
    """Make a raw continuation postable: first line only, no URLs, single spaces, ≤ ``max_chars``.

    The cut at the first newline is huggingtweets'; URLs are removed the way training data was
    cleaned (a URL in a generated tweet is made up and leads nowhere); halves of multi-byte
    characters, combining marks and emoji parts that lost their character and degenerate
    punctuation runs go (:mod:`training.textrules`); a tweet over the limit
    ends at its last sentence end that keeps half the limit, else its last word boundary, never
    inside a grapheme; a separator left dangling at the end (``:``, `` -``) goes.
    """
    line = NEWLINE.split(text, maxsplit=1)[0]
    # Control characters are never meant to be posted.
    line = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in line)
    line = " ".join(word for word in line.split() if not _is_link(word))
    # Replacement characters (a multi-byte character, such as a CJK ideograph, cut between byte
    # tokens), combining marks and emoji parts left without their character.
    line = collapse_punctuation(drop_broken_emoji(drop_broken_characters(line)))
    line = " ".join(line.split())
    return strip_link_residue(fit_tweet(line, max_chars)).rstrip()


def _is_link(word: str) -> bool:
    """Whether ``word`` is (or holds) a link, read through invisible and look-alike characters:
    with a scheme or ``www.``, or a domain X links without one (``bit.ly/x``, ``wh.gov``)."""
    folded = fold_lookalikes(word, joined=True)
    return any(_URL.search(form) or bare_links(form) for form in (word, folded))


def has_content(text: str) -> bool:
    """Whether ``text`` holds a letter, digit or symbol (an emoji counts; punctuation does not)."""
    return any(unicodedata.category(ch)[0] in "LNS" for ch in text)


def is_degenerate(tweet: str) -> bool:
    """Whether a tidied candidate is no tweet anyone would post, whatever the model: a single word
    ("President", "()).SOTU"), no letter at all ("2016 🔥", "!!! ..."), or fewer than two words
    that hold a letter, digit or emoji ("() SOTU"). The rule reads the text only, so every
    backend's candidates are judged alike."""
    words = tweet.split()
    if len(words) < 2 or not any(ch.isalpha() for ch in tweet):
        return True
    return sum(1 for word in words if has_content(word)) < 2


#: The default filter's rule (:meth:`CopyFilter.for_folder` saves only that one).
_DEFAULT_NGRAM, _DEFAULT_MIN_RUN, _DEFAULT_SHARE = 8, 6, 0.8
_NOT_DIGESTS = frozenset({"stamp", "shape"})


class CopyFilter:
    """Rejects candidates that reproduce a training tweet verbatim or nearly.

    A candidate is a copy when, compared by :func:`normalize`:

    * it equals a training tweet; or
    * it shares a run of ``ngram`` (8) consecutive words with one training tweet — the length at
      which a word sequence stops being a common phrase and becomes a quotation; or
    * a run of ``max(min_run, ceil(share × its words))`` words — at least 6 and 80 % of a short
      candidate — appears in one training tweet, which catches a short tweet copied with a word
      changed or dropped.

    Shorter shared phrases ("thank you so much", "I can't wait for the") are the style the model
    is meant to learn, so they pass.
    """

    def __init__(
        self,
        texts: Iterable[str],
        *,
        ngram: int = _DEFAULT_NGRAM,
        min_run: int = _DEFAULT_MIN_RUN,
        share: float = _DEFAULT_SHARE,
    ) -> None:
        import numpy as np

        if not 2 <= min_run <= ngram:
            raise InputError("The copy filter's min_run must be between 2 and its n-gram length.")
        self.ngram = ngram
        self.min_run = min_run
        self.share = share
        # Every key is kept as a 64-bit digest in a sorted array: 8 bytes an n-gram, a fraction of
        # what a set of strings costs. Two different n-grams share a digest with odds of about
        # 1e-9 for a million of them.
        exact: list[int] = []
        vocabulary: set[int] = set()
        runs: dict[int, list[int]] = {k: [] for k in range(min_run, ngram + 1)}
        for text in texts:
            words = normalized_words(text)
            if not words:
                continue
            vocabulary.update(_digest(word) for word in words)
            exact.append(_digest(" ".join(words)))
            for k, digests in runs.items():
                digests.extend(_digest(gram) for gram in _grams(words, k))
        self._exact = np.unique(np.array(exact, dtype=np.uint64))
        self._words = np.unique(np.array(sorted(vocabulary), dtype=np.uint64))
        self._runs = {k: np.unique(np.array(d, dtype=np.uint64)) for k, d in runs.items()}

    @classmethod
    def for_folder(cls, model_dir: Path, texts: Iterable[str]) -> CopyFilter:
        """The default filter of a model folder whose ``dataset.jsonl`` holds ``texts``.

        Digesting a few thousand tweets takes a few hundred milliseconds, most of a cold
        handle's load, so the digests are saved in the folder (:data:`COPY_FILTER_FILE`) the
        first time and read back after, while the dataset file and the matching rules are
        the ones they were made from. A folder that cannot be written is digested each time.
        """
        path = model_dir / COPY_FILTER_FILE
        stamp = _filter_stamp(model_dir)
        saved = cls._read(path, stamp) if stamp else None
        if saved is not None:
            return saved
        made = cls(texts)
        if stamp:
            made._write(path, stamp)
        return made

    @classmethod
    def _read(cls, path: Path, stamp: str) -> CopyFilter | None:
        """The filter saved at ``path`` if it was made under ``stamp`` and is well formed."""
        import zipfile

        import numpy as np

        if path.is_symlink() or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                if str(saved["stamp"]) != stamp:
                    return None
                ngram, min_run = (int(n) for n in saved["shape"])
                if (ngram, min_run) != (_DEFAULT_NGRAM, _DEFAULT_MIN_RUN):
                    return None
                arrays = {name: saved[name] for name in saved.files if name not in _NOT_DIGESTS}
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None
        wanted = {"exact", "words", *(f"run{k}" for k in range(min_run, ngram + 1))}
        if set(arrays) != wanted or not all(_sorted_digests(a) for a in arrays.values()):
            return None
        made = cls.__new__(cls)
        made.ngram, made.min_run, made.share = ngram, min_run, _DEFAULT_SHARE
        made._exact, made._words = arrays["exact"], arrays["words"]
        made._runs = {k: arrays[f"run{k}"] for k in range(min_run, ngram + 1)}
        return made

    def _write(self, path: Path, stamp: str) -> None:
        """Save the digests at ``path`` (whole or not at all); a failure only costs speed."""
        import numpy as np

        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        arrays = {f"run{k}": digests for k, digests in self._runs.items()}
        try:
            with temporary.open("xb") as file:
                np.savez(
                    file,
                    stamp=np.array(stamp),
                    shape=np.array([self.ngram, self.min_run]),
                    exact=self._exact,
                    words=self._words,
                    **arrays,
                )
            os.replace(temporary, path)
        except OSError as error:
            log.debug("could not save the copy filter in %s: %s", path.parent, error)
            temporary.unlink(missing_ok=True)

    def __len__(self) -> int:
        """How many distinct training tweets the filter knows."""
        return int(self._exact.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the digest arrays (what the filter costs a cached model)."""
        arrays = [self._exact, self._words, *self._runs.values()]
        return int(sum(a.nbytes for a in arrays))

    def knows_word(self, word: str) -> bool:
        """Whether the training tweets use ``word`` as a whole word (compared as
        :func:`normalized_words` compares)."""
        folded = normalized_words(word)
        return len(folded) == 1 and _contains(self._words, [_digest(folded[0])])

    def is_copy(self, text: str) -> bool:
        """Whether ``text`` copies a training tweet (see the class docstring for the rule)."""
        # Twice when the text holds invisible characters: read as separators and as nothing.
        variants = {tuple(normalized_words(text)), tuple(normalized_words(text, joined=True))}
        return any(self._copies(list(words)) for words in variants if words)

    def _copies(self, words: list[str]) -> bool:
        if _contains(self._exact, [_digest(" ".join(words))]):
            return True
        run = min(self.ngram, max(self.min_run, math.ceil(self.share * len(words))))
        if len(words) < run:
            return False
        return _contains(self._runs[run], [_digest(gram) for gram in _grams(words, run)])


@functools.lru_cache(maxsize=1)
def _rules_digest() -> str:
    """Changes with the code that turns a tweet into words and digests (this module and the
    text rules it uses), so digests saved by another version are made again."""
    from training import textrules

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(textrules.__file__).read_bytes())
    return digest.hexdigest()


def _filter_stamp(model_dir: Path) -> str:
    """What saved digests must have been made from: the dataset file (size and time), the
    rules and the default thresholds; empty when the dataset cannot be read."""
    try:
        info = (model_dir / DATASET_FILE).stat()
    except OSError:
        return ""
    thresholds = f"{_DEFAULT_NGRAM}:{_DEFAULT_MIN_RUN}:{_DEFAULT_SHARE}"
    return f"{info.st_size}:{info.st_mtime_ns}:{thresholds}:{_rules_digest()}"


def _sorted_digests(array: Any) -> bool:
    """Whether ``array`` is what the filter searches: 1-D, uint64, strictly increasing."""
    import numpy as np

    return (
        array.ndim == 1
        and array.dtype == np.uint64
        and bool(np.all(array[1:] > array[:-1]) if array.size > 1 else True)
    )


def _grams(words: list[str], k: int) -> Iterable[str]:
    return (" ".join(words[i : i + k]) for i in range(len(words) - k + 1))


def _digest(text: str) -> int:
    """A stable 64-bit digest of ``text`` (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _contains(sorted_keys: Any, keys: list[int]) -> bool:
    """Whether any of ``keys`` is in the sorted uint64 array ``sorted_keys``."""
    import numpy as np

    if not keys or sorted_keys.size == 0:
        return False
    wanted = np.array(keys, dtype=np.uint64)
    at = np.searchsorted(sorted_keys, wanted)
    found = at < sorted_keys.size
    return bool(np.any(sorted_keys[at[found]] == wanted[found]))
