"""How like a person a set of tweets is: the style table of a model card.

:func:`style_stats` measures a list of tweets — mean length, replies (starting with ``@``),
@mentions, hashtags, emoji, all-lowercase tweets and languages — and :func:`style_rows` lays the
person's real tweets beside the model's generated ones as Markdown table rows. Languages come
from ``py3langid`` (its model ships inside the wheel, so it works offline); a tweet too short or
too mixed to call is counted as ``und`` (undetermined), not guessed; words are counted the way
each script writes them (:func:`training.textrules.count_words`), so a Chinese, Japanese or Thai
sentence is long enough to call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import regex

_MENTION = regex.compile(r"(?<![\w@])@\w{1,50}")
_HASHTAG = regex.compile(r"(?<![\w#])#\w+")
_EMOJI = regex.compile(r"\p{Extended_Pictographic}|\p{Regional_Indicator}{2}")
_NOT_WORDS = regex.compile(r"(?<![\w@#])[@#]\w+|\p{Extended_Pictographic}|https?:\S*")
_LETTER_WORD = regex.compile(r"\p{L}{2,}")
#: Below this normalised probability a tweet's language is ``und``.
MIN_LANGUAGE_PROBABILITY = 0.6
#: Words with letters a tweet needs before its language is called.
MIN_LANGUAGE_WORDS = 3
#: Languages shown by name; the rest are summed as ``other``.
TOP_LANGUAGES = 3
UNDETERMINED = "und"
#: A language is one of a person's main languages from this share (%) of their tweets whose
#: language can be called.
MAIN_LANGUAGE_SHARE = 20.0
#: Tweets read to find the main languages (spread evenly over the kept ones).
MAIN_LANGUAGE_SAMPLE = 1_000


@cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_of(text: str) -> str:
    """The ISO 639-1 code of ``text``'s language, or ``und`` when it cannot be called."""
    from training.textrules import unspaced_words, without_unspaced

    words = _NOT_WORDS.sub(" ", text)
    # A word of letters counts once, as in any script written with spaces; letters of a script
    # written without them count as words (a Chinese sentence is one \p{L} run).
    counted = len(_LETTER_WORD.findall(without_unspaced(words))) + unspaced_words(words)
    if counted < MIN_LANGUAGE_WORDS:
        return UNDETERMINED
    code, probability = _identifier().classify(words)
    return str(code) if probability >= MIN_LANGUAGE_PROBABILITY else UNDETERMINED


def main_languages(texts: Sequence[str]) -> dict[str, float]:
    """The person's main languages, most used first: ``{code: share %}`` of the tweets whose
    language can be called, each at least :data:`MAIN_LANGUAGE_SHARE`; empty when none can."""
    step = max(1, -(-len(texts) // MAIN_LANGUAGE_SAMPLE))
    counts = Counter(language_of(t) for t in texts[::step])
    counts.pop(UNDETERMINED, None)
    called = sum(counts.values())
    shares = {code: _pct(n, called) for code, n in counts.most_common()}
    return {code: share for code, share in shares.items() if share >= MAIN_LANGUAGE_SHARE}


def _pct(count: int, total: int) -> float:
    return round(100.0 * count / total, 1) if total else 0.0


@dataclass(frozen=True, slots=True)
class StyleStats:
    """The style of a list of tweets; percentages are of tweets, 0–100 with one decimal."""

    tweets: int
    mean_chars: float
    replies_pct: float
    mentions_pct: float
    hashtags_pct: float
    emoji_pct: float
    lowercase_pct: float
    languages: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (``training.json`` and the benchmarks store it)."""
        return {
            "tweets": self.tweets,
            "mean_chars": self.mean_chars,
            "replies_pct": self.replies_pct,
            "mentions_pct": self.mentions_pct,
            "hashtags_pct": self.hashtags_pct,
            "emoji_pct": self.emoji_pct,
            "lowercase_pct": self.lowercase_pct,
            "languages": dict(self.languages),
        }


def style_stats(texts: Sequence[str]) -> StyleStats:
    """Measure ``texts`` (one tweet each); an empty list gives zeros."""
    total = len(texts)
    languages: Counter[str] = Counter(language_of(t) for t in texts)
    return StyleStats(
        tweets=total,
        mean_chars=round(sum(len(t) for t in texts) / total, 1) if total else 0.0,
        replies_pct=_pct(sum(t.lstrip().startswith("@") for t in texts), total),
        mentions_pct=_pct(sum(bool(_MENTION.search(t)) for t in texts), total),
        hashtags_pct=_pct(sum(bool(_HASHTAG.search(t)) for t in texts), total),
        emoji_pct=_pct(sum(bool(_EMOJI.search(t)) for t in texts), total),
        lowercase_pct=_pct(sum(_is_lowercase(t) for t in texts), total),
        languages={code: _pct(n, total) for code, n in languages.most_common()},
    )


def _is_lowercase(text: str) -> bool:
    """Whether ``text`` has cased letters and none of them is upper-case (@handles aside)."""
    words = _NOT_WORDS.sub(" ", text)
    cased = [ch for ch in words if ch.isupper() or ch.islower()]
    return bool(cased) and not any(ch.isupper() for ch in cased)


def broken_emoji_pct(texts: Sequence[str]) -> float:
    """The share of ``texts`` holding a broken emoji: a skin-tone modifier, joiner or selector
    that lost its emoji, or half a flag (what :func:`training.textrules.drop_broken_emoji`
    removes)."""
    from training.textrules import drop_broken_emoji

    return _pct(sum(drop_broken_emoji(t) != t for t in texts), len(texts))


#: The percentage measures :func:`style_gap` averages.
_GAP_FIELDS = ("replies_pct", "mentions_pct", "hashtags_pct", "emoji_pct", "lowercase_pct")


def style_gap(real: StyleStats, generated: StyleStats) -> float:
    """How far ``generated`` is from ``real``, in percentage points (0 = the same style).

    The mean of seven distances: each percentage measure's absolute difference (replies,
    @mentions, hashtags, emoji, all lower-case), the mean length's relative difference (in %,
    capped at 100) and the languages' total variation distance (in %: the share of tweets that
    would have to change language).
    """
    parts = [abs(getattr(real, name) - getattr(generated, name)) for name in _GAP_FIELDS]
    if real.mean_chars > 0:
        parts.append(
            min(100.0, 100.0 * abs(real.mean_chars - generated.mean_chars) / real.mean_chars)
        )
    else:
        parts.append(0.0 if generated.mean_chars == 0 else 100.0)
    codes = set(real.languages) | set(generated.languages)
    parts.append(
        sum(abs(real.languages.get(c, 0.0) - generated.languages.get(c, 0.0)) for c in codes) / 2
    )
    return round(sum(parts) / len(parts), 1)


def _languages_text(languages: dict[str, float], shown: Sequence[str]) -> str:
    parts = [f"{code} {languages.get(code, 0.0):g} %" for code in shown]
    other = round(100.0 - sum(languages.get(code, 0.0) for code in shown), 1)
    if other > 0.05 and languages:
        parts.append(f"other {other:g} %")
    return ", ".join(parts) if parts else "—"


def style_rows(
    real: StyleStats, generated: StyleStats, *, copy_rate_pct: float | None = None
) -> list[str]:
    """Markdown rows ``| measure | real | generated |`` with a header, for the model card."""
    shown = [c for c, _ in Counter(real.languages).most_common(TOP_LANGUAGES) if c != UNDETERMINED]
    rows = [
        "| Style | Real tweets | Generated |",
        "| --- | --- | --- |",
        f"| Tweets compared | {real.tweets} | {generated.tweets} |",
        f"| Mean length (characters) | {real.mean_chars:g} | {generated.mean_chars:g} |",
        f"| Replies (start with @) | {real.replies_pct:g} % | {generated.replies_pct:g} % |",
        f"| With @mentions | {real.mentions_pct:g} % | {generated.mentions_pct:g} % |",
        f"| With #hashtags | {real.hashtags_pct:g} % | {generated.hashtags_pct:g} % |",
        f"| With emoji | {real.emoji_pct:g} % | {generated.emoji_pct:g} % |",
        f"| All lower-case | {real.lowercase_pct:g} % | {generated.lowercase_pct:g} % |",
        f"| Languages | {_languages_text(real.languages, shown)} | "
        f"{_languages_text(generated.languages, shown)} |",
    ]
    if copy_rate_pct is not None:
        rows.append(f"| Copies of training tweets | — | {copy_rate_pct:g} % |")
    return rows
