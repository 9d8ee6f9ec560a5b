"""Posts from a plain-text file: one post per line, the simplest export there is.

A ``.txt`` file is read with the same encoding detection and mojibake repair as CSV files
(:func:`training.sources.decoding.decode_bytes`); every non-empty line is one post, in the order
of the file (taken as newest first, like a timeline). A line starting with ``RT @`` is a retweet,
as in an X archive, and is counted as one.
"""

from __future__ import annotations

from pathlib import Path

from training.errors import InputError
from training.handles import Handle
from training.sources.base import RawTweet
from training.sources.decoding import decode_bytes, repair_mojibake
from training.sources.guards import unreadable


class PlainTextSource:
    """A text file of posts, one per line; every line belongs to the handle being trained."""

    kind = "text"

    def __init__(self, path: Path, *, max_file_bytes: int) -> None:
        self.path = Path(path)
        self.max_file_bytes = max_file_bytes

    def fetch(self, handle: Handle) -> list[RawTweet]:
        """Every non-empty line as a post, in file order."""
        name = self.path.name
        text = decode_bytes(self._read(name), name)
        tweets = [
            RawTweet(
                id=f"line-{number}",
                created_at=None,
                text=repair_mojibake(line.strip()),
                is_retweet=line.lstrip().startswith("RT @"),
                is_reply=line.lstrip().startswith("@"),
                source=self.kind,
            )
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
        if not tweets:
            raise InputError(f"{name} has no lines of text.")
        return tweets

    def _read(self, name: str) -> bytes:
        try:
            size = self.path.stat().st_size
            if size > self.max_file_bytes:
                raise InputError(f"{name} is {_over(size, self.max_file_bytes)}.")
            with self.path.open("rb") as handle:
                data = handle.read(self.max_file_bytes + 1)
        except OSError as error:
            raise unreadable(name, error) from error
        if len(data) > self.max_file_bytes:
            raise InputError(f"{name} grew past the limit for input files.")
        if not data.strip():
            raise InputError(f"{name} is empty.")
        return data


def _over(size: int, limit: int) -> str:
    """``12.50 MB, over the 10 MB limit …``, in bytes when MB would round into the limit."""
    shown = f"{size / 1048576:.2f}"
    if float(shown) > limit / 1048576:
        return f"{shown} MB, over the {limit / 1048576:g} MB limit for input files"
    return f"{size:,} bytes, over the limit of {limit:,} bytes for input files"
