"""Text rules that keep a tweet whole: grapheme-safe cuts, no broken emoji, no link residue.

Everything here is a pure function on ``str``. Generation uses them on every candidate; cleaning
uses :func:`strip_link_residue` on the text a model is trained on (after huggingtweets' counts
are taken, so the data table stays exactly huggingtweets').

* A cut falls on a grapheme-cluster boundary (UAX #29, the ``regex`` module's ``\\X``): never
  inside an emoji ZWJ sequence, a flag or a letter with its accents.
* A skin-tone modifier, variation selector or zero-width joiner that has lost its emoji is dropped
  (a model that learned ``👍🏽`` token by token can emit ``🏽`` alone).
* Degenerate punctuation runs (``,,,,,,``) collapse; emphatic ones keep up to three (``!!!``).
* A tweet whose link was removed loses the separator that introduced it (``Read this: <link>``
  → ``Read this``; ``Great read - <link>`` → ``Great read``).
* When a tweet must be shortened, it ends at the last sentence end that keeps most of it, else
  at the last word boundary, else at the last grapheme that fits.
* Words are counted the way each script writes them (:func:`word_equivalents`): a
  whitespace-separated token is one word, as huggingtweets counted, unless it is written in a
  script without spaces between words (Chinese, Japanese, Thai, …), whose letters are counted.
* A replacement character (a multi-byte character cut in half) and a combining mark that lost
  its letter are dropped (:func:`drop_broken_characters`).
"""

from __future__ import annotations

import functools

import regex

#: A grapheme cluster (extended, UAX #29).
_GRAPHEME = regex.compile(r"\X")
#: Characters that only mean something attached to an emoji before them.
_ORPHANS = regex.compile(
    r"(?<![\p{Emoji_Modifier_Base}])\p{Emoji_Modifier}"  # skin tone without a base
    r"|(?<![\p{Extended_Pictographic}\p{Emoji_Modifier}\uFE0F])\u200d"  # ZWJ without an emoji
    r"|\u200d(?![\p{Extended_Pictographic}])"  # ZWJ joining nothing
    r"|(?<![\p{Emoji}\p{Emoji_Modifier}\u200d])[\uFE0F\u20E3]"  # presentation/keycap alone
)
#: A lone regional indicator (half a flag): pairs are kept, the odd one out is dropped.
_FLAGS = regex.compile(r"\p{Regional_Indicator}{1,2}")
#: Separator punctuation that repeated is never style.
_SEPARATOR_RUN = regex.compile(r"([,;:])(?:\s*\1)+")
#: Emphatic punctuation keeps at most three.
_EMPHATIC_RUN = regex.compile(r"([!?.])\1{3,}")
#: Mixed runs of commas, semicolons and full stops (",.,.,.") are noise.
_MIXED_RUN = regex.compile(r"[,;][,.;]{2,}")
#: What a removed link leaves at the end of a tweet: a separator with nothing after it.
_LINK_RESIDUE = regex.compile(r"(?:\s*(?:[-–—:|·•→»>~]+|\(\s*\)?|\[\s*\]?|\bvia))+\s*$")
#: A link as the last word of a raw tweet (huggingtweets removes it, leaving what introduced it).
_LINK_AT_END = regex.compile(r"https?:\S*\s*$", regex.IGNORECASE)
#: What ends a sentence: terminal punctuation (closing quotes or brackets may follow).
_SENTENCE_END = regex.compile(r"[.!?…](?:[\"'”’)\]]*)(?=\s)")


#: Scripts written without spaces between words, by letters per word (docs/training.md,
#: *Other languages*): ideographs (a Chinese word averages about 1.5 characters), kana (Japanese
#: words written in kana run longer) and the abugidas of South-East Asia and Tibet, counted in
#: letters without their vowel and tone marks.
_UNSPACED_SCRIPTS: tuple[tuple[regex.Pattern[str], float], ...] = (
    # Script extensions: the kana length mark "ー" and the iteration marks count with their script.
    (regex.compile(r"(?=\p{L})[\p{scx=Han}\p{scx=Bopomofo}\p{scx=Yi}]"), 1.5),
    (regex.compile(r"(?=\p{L})(?!\p{scx=Han})[\p{scx=Hiragana}\p{scx=Katakana}]"), 2.5),
    (
        regex.compile(
            r"(?=\p{L})[\p{scx=Thai}\p{scx=Lao}\p{scx=Khmer}\p{scx=Myanmar}\p{scx=Tibetan}"
            r"\p{scx=Tai_Tham}\p{scx=New_Tai_Lue}\p{scx=Tai_Le}\p{scx=Tai_Viet}"
            r"\p{scx=Balinese}\p{scx=Javanese}]"
        ),
        3.0,
    ),
)
#: A letter of any script written without spaces.
_UNSPACED = regex.compile("|".join(pattern.pattern for pattern, _ in _UNSPACED_SCRIPTS))
#: A run of letters or digits (a word of a script written with spaces, inside a mixed token).
_SPACED_RUN = regex.compile(r"[\p{L}\p{N}]+")


def is_unspaced(char: str) -> bool:
    """Whether ``char`` is a letter of a script written without spaces between words (Han,
    kana, Thai, Lao, Khmer, Myanmar, …): after it, every character starts a new word."""
    return bool(_UNSPACED.match(char))


def word_equivalents(token: str) -> float:
    """How many words one whitespace-separated ``token`` is worth.

    1 for a token with no letter of a script written without spaces: exactly huggingtweets'
    count. Otherwise its letters of those scripts divided by the script's letters per word
    (``_UNSPACED_SCRIPTS``), plus one for each run of other letters or digits (``Python`` in
    ``用Python写``), and never less than 1.
    """
    if not _UNSPACED.search(token):
        return 1.0
    return max(1.0, unspaced_words(token) + len(_SPACED_RUN.findall(without_unspaced(token))))


def unspaced_words(text: str) -> float:
    """The words ``text``'s letters of scripts written without spaces are worth (0 for none)."""
    return sum(len(pattern.findall(text)) / per_word for pattern, per_word in _UNSPACED_SCRIPTS)


def without_unspaced(text: str) -> str:
    """``text`` with each letter of a script written without spaces made a space."""
    return _UNSPACED.sub(" ", text)


def count_words(text: str) -> float:
    """The words of ``text`` counted script by script (:func:`word_equivalents` per token)."""
    return sum(word_equivalents(token) for token in text.split())


#: A combining mark with no letter before it to carry it: at the start or after a separator.
#: (Emoji presentation selectors and the keycap mark are :func:`drop_broken_emoji`'s concern.)
_DANGLING_MARKS = regex.compile(r"(?:^|(?<=[\s\p{Z}\p{C}\p{P}]))(?:(?![\uFE0E\uFE0F\u20E3])\p{M})+")


def drop_broken_characters(text: str) -> str:
    """``text`` without replacement characters (U+FFFD: a multi-byte character, such as a CJK
    ideograph, cut between byte tokens) and without combining marks (accents, Thai vowel and tone
    marks) that lost their letter."""
    return _DANGLING_MARKS.sub("", text.replace("\ufffd", ""))


def graphemes(text: str) -> list[str]:
    """The grapheme clusters of ``text`` in order (joined, they give ``text`` back)."""
    return _GRAPHEME.findall(text)


def cut_graphemes(text: str, max_chars: int) -> str:
    """The longest prefix of ``text`` of at most ``max_chars`` code points ending on a grapheme
    boundary (so ``👨‍👩‍👧`` or ``🇩🇪`` is kept whole or dropped whole)."""
    if len(text) <= max_chars:
        return text
    end = 0
    for match in _GRAPHEME.finditer(text):
        if match.end() > max_chars:
            break
        end = match.end()
    return text[:end]


def drop_broken_emoji(text: str) -> str:
    """``text`` without modifiers, joiners and selectors that lost their emoji, or half flags."""
    text = _ORPHANS.sub("", text)
    return _FLAGS.sub(lambda m: m.group(0) if len(m.group(0)) == 2 else "", text)


def collapse_punctuation(text: str) -> str:
    """Collapse degenerate punctuation runs: ``,,,,`` → ``,``; ``!!!!!!`` → ``!!!``."""
    text = _MIXED_RUN.sub(lambda m: m.group(0)[0], text)
    text = _SEPARATOR_RUN.sub(r"\1", text)
    return _EMPHATIC_RUN.sub(r"\1\1\1", text)


def strip_link_residue(text: str) -> str:
    """``text`` without the separator a removed link left dangling at its end (``Read this:``,
    ``Great read -``, ``(``); other text is unchanged."""
    stripped = _LINK_RESIDUE.sub("", text)
    return stripped if stripped.strip() else text


def strip_removed_link_residue(raw: str, cleaned: str) -> str:
    """``cleaned`` without link residue when ``raw`` (the tweet before cleaning) ended in a link;
    a tweet that really ends in ``:`` or ``-`` keeps it."""
    return strip_link_residue(cleaned) if _LINK_AT_END.search(raw) else cleaned


#: Latin letters with accents (twitter-text's ``latinAccentChars``): a name followed by one is no
#: mention on X.
_LATIN_ACCENTS = (
    "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u024f\u0253\u0254\u0256\u0257\u0259"
    "\u025b\u0263\u0268\u026f\u0272\u0289\u028b\u02bb\u0300-\u036f\u1e00-\u1eff"
)
#: X's mention, as twitter-text extracts it (``validMentionOrList`` and ``endMentionMatch``): an
#: ``@`` or ``＠`` at the start, after any character but an ASCII letter, digit or one of
#: ``_!#$%&*@＠`` (so ``日本語@jack`` and ``café@jack`` link), or after ``RT``/``rt`` with an
#: optional ``:`` (``RT@jack``); then 1 to 20 letters, digits or ``_`` and an optional
#: ``/list``, not followed by another at sign, an accented Latin letter or ``://``.
_X_MENTION = regex.compile(
    r"(?:(?<=^|[^a-zA-Z0-9_!#$%&*@\uff20])|(?<=(?:^|[^a-zA-Z0-9_+~.\-])[rR][tT]:?))"
    r"[@\uff20]([a-zA-Z0-9_]{1,20}+)(?:/[a-zA-Z][a-zA-Z0-9_\-]{0,24})?+"
    rf"(?![@\uff20{_LATIN_ACCENTS}]|://)"
)
#: Mastodon's mention (``Account::MENTION_RE`` in app/models/account.rb): an ``@`` not after a
#: word character, ``=`` or ``/`` — so the second ``@`` of ``@@name`` or ``＠@name`` links —
#: then a username and an optional ``@domain``.
_MASTODON_MENTION = regex.compile(
    r"(?<![=/\w])@((?:[a-z0-9_]+(?:[.\-]+[a-z0-9_]+)*)(?:@\w+(?:[.\-]+\w+)*)?)",
    regex.IGNORECASE,
)


def x_mentions(text: str) -> list[str]:
    """The accounts X links (and notifies) in ``text``, in order."""
    return [match.group(1) for match in _X_MENTION.finditer(text)]


def mastodon_mentions(text: str) -> list[str]:
    """The accounts (``name`` or ``name@domain``) Mastodon links in ``text``, in order."""
    return [match.group(1) for match in _MASTODON_MENTION.finditer(text)]


def _mention_signs(text: str) -> set[int]:
    """Where the at sign of every mention X or Mastodon would link stands."""
    signs = {match.start() for match in _X_MENTION.finditer(text)}
    return signs | {match.start() for match in _MASTODON_MENTION.finditer(text)}


def has_mentions(text: str) -> bool:
    """Whether ``text`` holds an @mention a public network would turn into a link (and a ping)."""
    return bool(_mention_signs(text))


def neutralise_mentions(text: str) -> str:
    """``text`` with every @mention made plain text: a zero-width space after the at sign looks
    the same to a reader, but neither X nor Mastodon links it or notifies the account it names
    (Bluesky links nothing the bot posts: its posts carry no facets)."""
    for _ in range(len(text) + 1):  # each pass breaks at least one mention; bounded all the same
        signs = _mention_signs(text)
        if not signs:
            return text
        text = "".join(ch + "\u200b" if i in signs else ch for i, ch in enumerate(text))
    return text


#: A domain X links without a scheme (twitter-text's ``validAsciiDomain`` after
#: ``validUrlPrecedingChars``): dot-joined labels of ASCII letters, digits, ``-``, ``_`` and
#: accented Latin letters, not glued to a letter, digit, ``@``, ``$``, ``#`` or one of ``-_./``
#: before it, ending in a top-level domain that no letter, digit, ``@``, ``+`` or ``-`` follows;
#: then maybe a path. Whether that last label is a top-level domain is the Public Suffix List's
#: call (:func:`_top_level_domains`), not this pattern's.
_BARE_DOMAIN = regex.compile(
    rf"(?<![a-z0-9@\uff20$#\uff03\u202a-\u202e\-_./{_LATIN_ACCENTS}])"
    rf"((?:[a-z0-9_\-{_LATIN_ACCENTS}]+\.)+)([a-z]{{2,63}}|xn--[a-z0-9\-]{{1,59}})"
    r"(?![a-z0-9@+\-])(/)?",
    regex.IGNORECASE,
)
#: Country-code domains X links without a path although they are a name and the code only.
_SHORT_CC_LINKED = frozenset({"co", "tv"})


@functools.cache
def _top_level_domains() -> frozenset[str]:
    """The ICANN top-level domains of the Public Suffix List snapshot that ``tldextract`` ships
    (read from the installed package, never fetched: the bot may run offline)."""
    import tldextract

    extractor = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())
    return frozenset(suffix for suffix in extractor.tlds if "." not in suffix)


def _tld_of(label: str) -> str:
    label = label.lower()
    if label.startswith("xn--"):
        try:
            return label.encode("ascii").decode("idna")
        except UnicodeError:
            return label
    return label


def bare_links(text: str) -> list[str]:
    """The domains X links in ``text`` without a scheme, in order: ``bit.ly`` of ``bit.ly/3xY``,
    ``WH.gov``, ``irs-refund-now.com``, ``foo.co.jp`` — but not ``foo.baz`` (no such top-level
    domain), nor a country code's ``name.cc`` such as ``foo.jp`` without a path (X leaves those
    unlinked, ``t.co`` and ``MLB.tv`` excepted)."""
    found = []
    for match in _BARE_DOMAIN.finditer(text):
        labels, tld, path = match.group(1), match.group(2), match.group(3)
        if _tld_of(tld) not in _top_level_domains():
            continue
        country = len(tld) == 2
        if country and not path and labels.count(".") == 1 and tld.lower() not in _SHORT_CC_LINKED:
            continue
        found.append(labels + tld)
    return found


def fit_tweet(text: str, max_chars: int) -> str:
    """``text`` shortened to at most ``max_chars`` code points where a reader would stop.

    Unchanged when it fits. Otherwise it ends after the last sentence that keeps at least half of
    the limit, else at the last word boundary that fits, else at the last grapheme that fits.
    """
    if len(text) <= max_chars:
        return text
    head = cut_graphemes(text, max_chars)
    rest = text[len(head) :]
    # The lookahead of a sentence end needs the character after the head.
    ends = [m.end() for m in _SENTENCE_END.finditer(head + rest[:1]) if m.end() <= len(head)]
    if ends and ends[-1] >= max_chars // 2:
        return head[: ends[-1]]
    if rest[:1].isspace():
        return head.rstrip()
    space = head.rfind(" ")
    return head[:space].rstrip() if space > 0 else head


def tidy_text(text: str, max_chars: int) -> str:
    """All the rules above in order: broken characters and emoji, punctuation runs, length, link
    residue."""
    text = collapse_punctuation(drop_broken_emoji(drop_broken_characters(text)))
    text = " ".join(text.split())
    return strip_link_residue(fit_tweet(text, max_chars)).strip()
