"""Build examples/Goethe.csv from the haScreenSav transcription of Goethe's Maximen und Reflexionen.

The source file is ``document/Maximen&Reflexionen.frt`` of https://github.com/haXample/haScreenSav
at commit ``79c890b282d9bb937a1056afce42d42a91892959`` (the repository is licensed GPL-3.0): a
Windows-1252 text of the 1,413 maxims in Max Hecker's edition (Schriften der Goethe-Gesellschaft
21, Weimar 1907). Each entry is a header line ``N. Goethe, Maximen und Reflexionen N``, optional
unindented section labels such as ``AUS DEN WAHLVERWANDTSCHAFTEN (1809 Ottiliens Tagebuch)``,
then the maxim's lines, indented by two spaces. The last entry is the edition's citation.

What this script changes, and nothing else: the maxim's lines are joined with single spaces; the
edition's ``[?]`` marks (an uncertain reading) are dropped; fragments the edition marks
``[bricht ab]`` (breaks off), maxims longer than a tweet (280 characters) and no. 1330 (a sketch
of an ethnic stereotype about Jews: a demo archive ships nothing hateful) are left out. Run:

    python scripts/build_goethe_maximen.py 'Maximen&Reflexionen.frt' examples/Goethe.csv
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

#: The handle the rows are filed under (``doppeltweet data @Goethe --from examples/Goethe.csv``).
USER = "Goethe"
#: Longest maxim kept: the length of a tweet.
MAX_CHARS = 280
#: The source's encoding (its umlauts are single Windows-1252 bytes).
SOURCE_ENCODING = "cp1252"

_HEADER = re.compile(r"(\d+)\. (?:Johann Wolfgang )?Goethe, Maximen und Reflexionen\b.*")
# Unindented lines that label a section rather than belong to a maxim.
_LABEL = re.compile(r"(?:AUS |NACHLESE |ZITATEN-NACHWEIS|\()")
# A topic tag the transcriber put above one maxim (no. 1209); not Goethe's, so dropped.
_TAGS = frozenset({"QUANTENTHEORIE"})
_UNCERTAIN = re.compile(r"\s*\[\?\]")
_SPACES = re.compile(r"\s+")
#: Maxims left out by number: 1330 sketches an ethnic stereotype about Jews.
EXCLUDED = frozenset({1330})


@dataclass(frozen=True)
class Maxim:
    """One maxim: its number in the 1907 edition, its section and its text on one line."""

    number: int
    section: str
    text: str


def parse(source: str) -> list[Maxim]:
    """Every maxim in the ``.frt`` text, in the edition's order, sections carried forward."""
    maxims: list[Maxim] = []
    section = ""
    number: int | None = None
    labels: list[str] = []
    body: list[str] = []

    def finish() -> None:
        nonlocal section
        if number is None:
            return
        if labels:
            section = " ".join(labels)
        text = _SPACES.sub(" ", _UNCERTAIN.sub("", " ".join(body))).strip()
        if text and "ZITATEN-NACHWEIS" not in labels:
            maxims.append(Maxim(number, _SPACES.sub(" ", section), text))

    for line in source.splitlines():
        header = _HEADER.fullmatch(line.strip()) if not line.startswith(" ") else None
        if header:
            finish()
            number, labels, body = int(header.group(1)), [], []
        elif number is None or not line.strip() or line.strip() in _TAGS:
            continue
        elif not line.startswith(" ") and not body and _LABEL.match(line):
            labels.append(line.strip())
        else:
            body.append(line.strip())
    finish()
    return maxims


def keep(maxim: Maxim) -> bool:
    """Whether a maxim goes into the example: whole (not a fragment), tweet-length, not excluded."""
    return (
        maxim.number not in EXCLUDED
        and "[bricht ab]" not in maxim.text
        and len(maxim.text) <= MAX_CHARS
    )


def write_csv(maxims: list[Maxim], out: Path) -> int:
    """Write the kept maxims as ``id,text,user,section`` rows; returns how many were written."""
    kept = [maxim for maxim in maxims if keep(maxim)]
    with out.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["id", "text", "user", "section"])
        for maxim in kept:
            writer.writerow([f"MuR-{maxim.number}", maxim.text, USER, maxim.section])
    return len(kept)


def main(argv: list[str]) -> int:
    """``build_goethe_maximen.py SOURCE.frt OUT.csv``: parse, filter, write, report counts."""
    if len(argv) != 2:
        print("usage: build_goethe_maximen.py SOURCE.frt OUT.csv", file=sys.stderr)
        return 2
    source, out = Path(argv[0]), Path(argv[1])
    try:
        text = source.read_bytes().decode(SOURCE_ENCODING)
    except OSError as error:
        print(f"{source} cannot be read ({error.strerror or error}).", file=sys.stderr)
        return 1
    maxims = parse(text)
    if not maxims:
        print(f"{source} holds no maxims in the haScreenSav format.", file=sys.stderr)
        return 1
    written = write_csv(maxims, out)
    print(f"{len(maxims)} maxims read, {written} written to {out}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
