"""The file formats training reads, by name ending: the one list the bot's uploads follow too."""

from __future__ import annotations

#: An X archive: its zip, or the ``.js`` files of its ``data/`` folder.
X_ARCHIVE_SUFFIXES = (".zip", ".js")
#: A Mastodon archive sent as a tarball (a zip is told apart from an X archive by its members).
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
#: Tables of posts with a text column.
TABULAR_SUFFIXES = (".csv", ".tsv")
#: JSON Lines (or a JSON array) of posts.
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: Plain text, one post per line.
PLAIN_TEXT_SUFFIXES = (".txt", ".text")
#: Files that are tweets as text, never an archive whatever their bytes look like.
TEXT_SUFFIXES = TABULAR_SUFFIXES + JSON_SUFFIXES + PLAIN_TEXT_SUFFIXES
#: Every name ending training reads.
READABLE_SUFFIXES = X_ARCHIVE_SUFFIXES + TAR_SUFFIXES + TEXT_SUFFIXES
#: The formats in a user's words, for sentences that say what to send.
IN_WORDS = (
    "an X archive (.zip or .js), a Mastodon archive (.zip or .tar.gz), a CSV/TSV, a JSON Lines "
    "or a plain-text (.txt, one post per line) file"
)


def readable(name: str) -> bool:
    """Whether a file of this name is one training reads (by its ending, case ignored)."""
    return name.lower().endswith(READABLE_SUFFIXES)
