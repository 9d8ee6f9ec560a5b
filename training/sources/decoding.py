"""Text whose encoding nobody told us: decoded, then its mojibake repaired.

Files of posts come from anywhere, so the encoding may be UTF-8 with or without a BOM, UTF-16, or a
legacy code page such as MacRoman or Windows-1252, and the text may carry mojibake baked in (UTF-8
read as the wrong code page, sometimes twice, with the characters the code page lacked replaced by
``_``). The tabular and plain-text sources both read through here.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator
from typing import IO

import charset_normalizer
import ftfy
from charset_normalizer.md import mess_ratio

from training.errors import InputError
from training.sources.guards import mb

#: Legacy code pages that spreadsheet exports use (Excel for Mac writes MacRoman, Windows
#: Excel writes Windows-1252); always tried next to whatever the detector guesses.
LEGACY_ENCODINGS = ("cp1252", "mac_roman")
#: How much of a legacy file the encoding candidates are scored on.
SCORE_SAMPLE = 200_000
#: How much less messy a detector's guess must be to beat Windows-1252 and MacRoman.
_GUESS_MARGIN = 0.1

_FTFY = ftfy.TextFixerConfig(
    # Entities stay escaped: cleaning decodes them exactly once, like huggingtweets.
    unescape_html=False,
    uncurl_quotes=False,
    fix_character_width=False,
    fix_latin_ligatures=False,
    normalization="NFC",
)


def is_utf8(sample: bytes, handle: IO[bytes], max_bytes: int, name: str) -> bool:
    """Whether the whole file is strict UTF-8, checked chunk by chunk (nothing kept)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    total = len(sample)
    try:
        decoder.decode(sample)
        while chunk := handle.read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise InputError(f"{name} grew past the {mb(max_bytes)} MB limit.")
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


# --- encoding ---------------------------------------------------------------------------------


def decode_bytes(data: bytes, name: str) -> str:
    """Decode a text file whose encoding nobody told us, then repair mojibake inside it.

    A BOM wins; strict UTF-8 comes next (most files); otherwise the candidates are the
    detector's guesses plus MacRoman and Windows-1252, and the one whose text needs the least
    repair and looks least garbled wins. charset-normalizer alone is not enough: on the
    FiveThirtyEight CSVs (MacRoman) it picks cp775, cp852 or ISO-8859-15 depending on the sample.
    """
    text = _decode_with_bom(data)
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _decode_legacy(data, name)
    if "\x00" in text:
        raise InputError(f"{name} is not a text file (it contains NUL bytes).")
    return text


def bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark at the start names (a UTF-8 BOM is skipped)."""
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return encoding
    return None


def legacy_encoding(sample: bytes, name: str) -> str:
    """The legacy code page of a file that is not UTF-8, chosen on its first part."""
    if _looks_binary(sample):
        raise InputError(f"{name} is not a text file: it looks like binary data.")
    legacy = [_score(sample, encoding) for encoding in LEGACY_ENCODINGS]
    best = min((s for s in legacy if s is not None), key=lambda s: s[:2], default=None)
    # The detector's guesses (Cyrillic, Greek, CJK code pages…) must be clearly less messy than
    # the Western code pages spreadsheets use: on Western text it often guesses Baltic or
    # Central European pages that turn "è" into "č".
    for match in list(charset_normalizer.from_bytes(sample))[:3]:
        guess = _score(sample, match.encoding)
        if guess is not None and (
            best is None or guess[0] < best[0] or guess[1] < best[1] - _GUESS_MARGIN
        ):
            best = guess
    if best is None:
        raise InputError(f"{name} is not text in any encoding we recognise.")
    return best[2]


def _decode_with_bom(data: bytes) -> str | None:
    encoding = bom_encoding(data)
    if encoding is None:
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _decode_legacy(data: bytes, name: str) -> str:
    encoding = legacy_encoding(data[:SCORE_SAMPLE], name)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:  # the sample decoded but the rest does not
        raise InputError(f"{name} mixes text encodings and cannot be read.") from error


def _score(sample: bytes, encoding: str) -> tuple[int, float, str] | None:
    """(runs left garbled minus runs repaired, mess ratio, encoding): lower is better."""
    try:
        # Incremental, so a multi-byte character cut off by the sample's end is not an error.
        text = codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
    except (LookupError, UnicodeDecodeError):
        return None
    _, fixed, garbled = _repair_runs(text, finish=False)
    return garbled - fixed, mess_ratio(text[:20_000], 1.0), encoding


def _looks_binary(data: bytes) -> bool:
    sample = data[:65536]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return b"\x00" in sample or controls > len(sample) // 100


# --- mojibake -----------------------------------------------------------------------------------

# Undefined in Windows-1252: converters pass these bytes through unchanged.
_CP1252_UNDEFINED = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})
#: The cost of leaving a character of a suspicious run as it is rather than decoding it.
_KEEP_COST = 4.0
#: Longer runs are not mojibake of a few characters; leave them (and the search stays cheap).
_MAX_RUN = 48


def _one_round_preimages() -> dict[int, list[tuple[int, float]]]:
    """For each MacRoman byte, the bytes one "read as Windows-1252, save as MacRoman" came from.

    The cost says how much of a guess each is: 0 for a certain origin, more for the bytes that
    MacRoman could not store and the converter replaced with ``_`` (information lost; ``…``'s
    last byte and an emoji's first byte are by far the commonest such losses in tweets).
    """
    pre: dict[int, list[tuple[int, float]]] = {b: [] for b in range(256)}
    for x in range(256):
        if x < 0x80 or x in _CP1252_UNDEFINED:
            pre[x].append((x, 0.0))
            continue
        char = bytes([x]).decode("cp1252")
        try:
            pre[char.encode("mac_roman")[0]].append((x, 0.0))
        except UnicodeEncodeError:
            pre[ord("_")].append((x, 0.9 if x in (0xA6, 0xF0) else 1.0))
    return pre


_PREIMAGES = _one_round_preimages()
# A run of non-ASCII characters and underscores (``_`` marks a byte the converter lost).
_SUSPECT_RUN = re.compile(r"[^\x00-\x5e\x60-\x7f]*[^\x00-\x7f][^\x00-\x5e\x60-\x7f]*")


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text that was read as Windows-1252 and saved as MacRoman, once or twice.

    The FiveThirtyEight CSVs show both: ``…`` became ``â€_`` (one round, the ``¦`` lost to
    ``_``) or ``‰Û_`` (two rounds). ftfy fixes ordinary mojibake but not these, because of the
    lost bytes and the second round; here each run of suspicious characters is mapped back
    through the rounds, filling the ``_`` gaps with whatever makes valid UTF-8, and kept only if
    it then decodes. ftfy then repairs anything else.
    """
    if text.isascii():
        return text  # nothing to repair, and most tweets are ASCII: skip ftfy's work
    return _repair_runs(text)[0]


def _repair_runs(text: str, *, finish: bool = True) -> tuple[str, int, int]:
    """The repaired text, how many suspicious runs were repaired and how many stay garbled."""
    fixed = garbled = 0

    def repair(match: re.Match[str]) -> str:
        nonlocal fixed, garbled
        run = match.group()
        result = _repair_run(run)
        if result != run:
            fixed += 1
        elif sum(1 for ch in run if not ch.isascii()) >= 2:
            garbled += 1
        return result

    repaired = _SUSPECT_RUN.sub(repair, text)
    return (ftfy.fix_text(repaired, _FTFY) if finish else repaired), fixed, garbled


def _repair_run(run: str) -> str:
    if not 2 <= len(run) <= _MAX_RUN:
        return run
    try:
        raw = run.encode("mac_roman")
    except UnicodeEncodeError:
        return run
    options = [[(b, 0.0)] for b in raw]
    best: tuple[float, str] | None = None
    for _round in range(2):
        options = [_expand(opts) for opts in options]
        decoded = _best_utf8(options, run)
        if decoded is not None and (best is None or decoded[0] < best[0]):
            best = decoded
    return run if best is None else best[1]


def _expand(options: list[tuple[int, float]]) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for byte, cost in options:
        for origin, extra in _PREIMAGES[byte]:
            total = cost + extra
            if total < best.get(origin, float("inf")):
                best[origin] = total
    return sorted(best.items(), key=lambda item: item[1])


def _best_utf8(options: list[list[tuple[int, float]]], run: str) -> tuple[float, str] | None:
    """The cheapest reading of the run as UTF-8 (one byte choice per position), if any decodes.

    A character may also stay as it was, at a cost, so one undecodable spot does not block the
    rest of the run. ``None`` when nothing at all decodes to a non-ASCII character.
    """
    n = len(options)
    # best[i] = (cost, text, decoded anything) for the cheapest reading of positions i..n-1.
    best: list[tuple[float, str, bool]] = [(0.0, "", False)] * (n + 1)
    for i in range(n - 1, -1, -1):
        rest = best[i + 1]
        found = (rest[0] + _KEEP_COST, run[i] + rest[1], rest[2])
        for lead, lead_cost in options[i]:
            length = _utf8_length(lead)
            if length == 0 or i + length > n:
                continue
            rest = best[i + length]
            for tail in _tails(options[i + 1 : i + length]):
                try:
                    char = bytes([lead, *(b for b, _ in tail)]).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                cost = lead_cost + sum(c for _, c in tail) + rest[0] + _rarity(char)
                if cost < found[0]:
                    found = (cost, char + rest[1], rest[2] or not char.isascii())
        best[i] = found
    cost, text, decoded = best[0]
    return (cost, text) if decoded else None


# Blocks that tweets actually use: accented letters, punctuation, arrows, symbols, emoji.
_COMMON_BLOCKS = (
    (0x00A0, 0x024F),
    (0x0370, 0x04FF),
    (0x2000, 0x206F),
    (0x20A0, 0x20CF),
    (0x2100, 0x21FF),
    (0x231A, 0x231B),
    (0x23E9, 0x23FA),
    (0x2460, 0x27BF),
    (0x2900, 0x297F),
    (0x2B00, 0x2BFF),
    (0x3000, 0x303F),
    (0x1F000, 0x1F6FF),
    (0x1F910, 0x1F96F),
)


def _rarity(char: str) -> float:
    """A small charge for characters tweets rarely hold, to break ties between lost bytes."""
    if char.isascii():
        return 0.0
    if not unicodedata.name(char, ""):
        return 3.0  # unassigned: never what someone typed
    code = ord(char)
    return 0.0 if any(low <= code <= high for low, high in _COMMON_BLOCKS) else 0.5


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _tails(positions: list[list[tuple[int, float]]]) -> Iterator[list[tuple[int, float]]]:
    if not positions:
        yield []
        return
    continuations = [(b, c) for b, c in positions[0] if 0x80 <= b <= 0xBF]
    for choice in continuations:
        for rest in _tails(positions[1:]):
            yield [choice, *rest]
