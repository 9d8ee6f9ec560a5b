"""How recognisable a model is: would a classifier that knows the person pick them as the author?

A multinomial naive Bayes classifier (scikit-learn) learns the person's training tweets beside the
posts of a bundled panel of other public accounts (``training/panel/panel.jsonl``, built from the
project's example archives by :func:`build_panel`; an account with the person's handle is left
out). It then names the author of the model's generated tweets and of the person's held-out
validation tweets: the share of each it gives to the person is the figure the model card shows.
The features are hashed character 1–4-grams within words (they carry style in every script, and
CJK text has no words to split) and word 1–2-grams; classes have equal priors. It takes a second
or two.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import DataError

#: The bundled panel: one ``{"handle", "text"}`` object a line.
PANEL_FILE = Path(__file__).with_name("panel") / "panel.jsonl"
#: Posts per panel account (spread evenly over its kept tweets).
PANEL_POSTS = 600
#: The person's training tweets the classifier learns at most (spread evenly).
MAX_PERSON_POSTS = 2_000
#: Hash buckets of each feature space (character n-grams, word n-grams).
BUCKETS = 1 << 18
#: Additive smoothing of the per-class feature probabilities.
ALPHA = 0.03
CHAR_NGRAMS = (1, 4)
WORD_NGRAMS = (1, 2)
CLASSIFIER = (
    "multinomial naive Bayes (scikit-learn) over hashed character 1–4-grams and word "
    "1–2-grams, equal priors"
)


def _fold(text: str) -> str:
    """Case-folded, whitespace collapsed: what the features are counted on."""
    return " ".join(text.casefold().split())


def _pipeline() -> Any:
    """The unfitted scikit-learn pipeline: hashed n-gram counts into naive Bayes."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline, make_union

    counts = {"n_features": BUCKETS, "alternate_sign": False, "norm": None, "preprocessor": _fold}
    features = make_union(
        HashingVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, **counts),
        HashingVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, token_pattern=r"\S+", **counts),
    )
    return make_pipeline(features, MultinomialNB(alpha=ALPHA, fit_prior=False))


@dataclass
class AuthorClassifier:
    """Naive Bayes over hashed n-grams: ``fit`` on posts by author, ``predict`` an author."""

    authors: list[str]
    _model: Any  # fitted sklearn Pipeline; class i is authors[i]

    @classmethod
    def fit(cls, posts: Mapping[str, Sequence[str]]) -> AuthorClassifier:
        """Learn each author's feature distribution from their posts (two authors at least)."""
        authors = [a for a, texts in posts.items() if texts]
        if len(authors) < 2:
            raise DataError("Telling authors apart needs posts by at least two of them.")
        texts = [text for author in authors for text in posts[author]]
        labels = [row for row, author in enumerate(authors) for _ in posts[author]]
        return cls(authors, _pipeline().fit(texts, labels))

    def predict(self, texts: Iterable[str]) -> list[str]:
        """The most likely author of each text."""
        batch = list(texts)
        if not batch:
            return []
        return [self.authors[int(row)] for row in self._model.predict(batch)]


def load_panel(path: Path = PANEL_FILE) -> dict[str, list[str]]:
    """The panel's posts by account; empty when the file is missing or unreadable."""
    panel: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and all(
            isinstance(record.get(k), str) for k in ("handle", "text")
        ):
            panel.setdefault(record["handle"], []).append(record["text"])
    return panel


def _spread(texts: Sequence[str], most: int) -> list[str]:
    """At most ``most`` of ``texts``, evenly spread (deterministic)."""
    step = max(1, -(-len(texts) // most))
    return list(texts[::step])[:most]


def recognisability(
    handles: Sequence[str],
    train: Sequence[str],
    held_out: Sequence[str],
    generated: Sequence[str],
    panel: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any] | None:
    """The JSON-ready figure: how often the classifier names the person (``handles``: one model,
    so one class) as the author of ``generated`` and of ``held_out``; None without a panel
    account other than the person or without posts to judge."""
    panel = load_panel() if panel is None else panel
    own = {h.casefold() for h in handles}
    others = {a: _spread(list(t), PANEL_POSTS) for a, t in panel.items() if a.casefold() not in own}
    others = {a: t for a, t in others.items() if t}
    if not others or not train or not generated:
        return None
    person = "\x00person"  # never a handle
    classifier = AuthorClassifier.fit({person: _spread(list(train), MAX_PERSON_POSTS), **others})

    def share(texts: Sequence[str]) -> float | None:
        if not texts:
            return None
        picks = classifier.predict(texts)
        return round(100.0 * sum(p == person for p in picks) / len(picks), 1)

    return {
        "generated_pct": share(generated),
        "generated": len(generated),
        "held_out_pct": share(held_out),
        "held_out": len(held_out),
        "panel": sorted(others, key=str.casefold),
        "classifier": CLASSIFIER,
    }


def recognisability_sentence(record: Mapping[str, Any], who: str) -> str | None:
    """The card's and the bot's sentence for a ``recognisability`` record (None when damaged)."""
    try:
        generated = float(record["generated_pct"])
        panel = [str(a) for a in record["panel"]]
        held_out = record.get("held_out_pct")
    except (KeyError, TypeError, ValueError):
        return None
    others = len(panel)
    sentence = (
        f"A classifier that knows {who}'s real posts and those of {others} other public "
        f"account{'s' if others != 1 else ''} picks {who} for {generated:g} % of this model's "
        "tweets"
    )
    if isinstance(held_out, int | float):
        sentence += f" (and for {held_out:g} % of {who}'s own held-out posts)"
    return sentence + "."


def build_panel(sources: Mapping[str, Path], out: Path = PANEL_FILE) -> int:
    """Write the panel from archives (``{handle: file}``), cleaned as training cleans them:
    :data:`PANEL_POSTS` kept posts an account, evenly spread; returns the posts written."""
    from training.cleaning import clean_handle
    from training.config import get_settings
    from training.handles import parse_handle
    from training.pipeline import open_source

    settings = get_settings()
    lines = []
    for name, path in sorted(sources.items(), key=lambda item: item[0].casefold()):
        handle = parse_handle(name)
        posts = open_source(str(path), handle, settings).fetch(handle)
        for text in _spread(clean_handle(handle, posts).kept, PANEL_POSTS):
            lines.append(json.dumps({"handle": name, "text": text}, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)
