"""The last check before a sentence reaches Discord: no server path in it.

Error sentences come from everywhere (the training library, its background process, the model
loader, the store) and most are written for a person at a shell, where naming a file is helpful.
On a public server the same path tells strangers where the bot keeps its data, its user name and
its layout. The messages are fixed at their source to name models and files, not folders; this
module is the safety net at every place the bot relays an error's text to a channel: any
absolute path, and any path under the bot's data dir, is cut to its last part (``alice``,
``tweets.zip``), so the sentence still makes sense.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

#: What may end a path inside a sentence: whitespace, quotes and closing brackets.
_SEGMENT = r"[^\s/\\'\"“”‘’`()<>\[\]{},;]+"
#: A POSIX absolute path (``/srv/doppeltweet/data/guilds/1/models/alice``), not a URL
#: (``https://…``: preceded by ``:`` or ``/``) and not a ratio or an "and/or".
_ABSOLUTE = re.compile(rf"(?<![\w.:/~-])(?:/{_SEGMENT})+/?")
#: A Windows absolute path (``C:\\bot\\data\\…``).
_WINDOWS = re.compile(rf"(?<![\w])[A-Za-z]:\\(?:{_SEGMENT}\\?)+")
#: A home-relative path (``~/doppeltweet/data``).
_HOME = re.compile(rf"(?<![\w])~(?:/{_SEGMENT})+/?")
STORAGE = "the bot's storage"


def _last_part(match: re.Match[str]) -> str:
    text = match.group(0).rstrip("/\\")
    name = re.split(r"[/\\]", text)[-1] if text else ""
    return name or STORAGE


def public_message(text: str, data_dirs: Iterable[Path | str] = ()) -> str:
    """``text`` with every server path cut to its last part (a model's or a file's name).

    ``data_dirs`` are the bot's own folders (as configured, which may be relative, and
    resolved); a path below one of them is cut even when it is relative (``data/guilds/1/…``).
    """
    for folder in _forms(data_dirs):
        below = re.compile(rf"(?<![\w./-]){re.escape(folder)}(?:[/\\]{_SEGMENT})+[/\\]?")
        text = below.sub(_last_part, text)
        if Path(folder).is_absolute():  # a bare relative "data" is just a word
            exact = re.compile(rf"(?<![\w./-]){re.escape(folder)}(?![\w./\\-])")
            text = exact.sub(STORAGE, text)
    text = _ABSOLUTE.sub(_last_part, text)
    text = _WINDOWS.sub(_last_part, text)
    return _HOME.sub(_last_part, text)


def _forms(data_dirs: Iterable[Path | str]) -> list[str]:
    forms: set[str] = set()
    for folder in data_dirs:
        raw = str(folder).rstrip("/\\")
        if raw and raw not in (".", ".."):
            forms.add(raw)
        with contextlib.suppress(OSError, RuntimeError):
            forms.add(str(Path(folder).expanduser().resolve()))
    # Longest first, so /srv/x/data is cut before /srv/x.
    return sorted((f for f in forms if f and PurePath(f).name), key=len, reverse=True)


def bot_data_dirs(bot: Any) -> list[Path]:
    """The folders of a bot (its data dir and database file's folder) from its settings."""
    settings = getattr(bot, "settings", None)
    folders: list[Path] = []
    for name in ("data_dir", "db_file"):
        value = getattr(settings, name, None)
        if isinstance(value, Path | str):
            folders.append(Path(value) if name == "data_dir" else Path(value).parent)
    return folders


def public_error(bot: Any, text: str) -> str:
    """:func:`public_message` with the bot's own folders: what every relay site calls."""
    return public_message(text, bot_data_dirs(bot))
