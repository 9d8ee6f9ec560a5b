"""A server's uploads: where an attachment is saved, and the one place that deletes them.

Every upload lands in a fresh folder of its own under the server's uploads root, with a
sanitised name; several files of one X archive share a ``data/`` folder. A model keeps the
uploads it was trained from (``!retrain`` reads them again); the rest are deleted here, and
nothing outside the uploads root ever is.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bot.config import BotSettings
from bot.sources import REMOTE_SOURCES
from training.errors import InputError
from training.sources import formats

#: The folder inside an upload that holds the .js files of one archive sent as several files.
UPLOAD_ARCHIVE_FOLDER = "data"

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(filename: str) -> str:
    """A file name safe on any file system: base name only, ASCII letters, digits, ``._-``."""
    base = re.split(r"[\\/]", filename)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = _UNSAFE_NAME.sub("_", stem).strip("._-")[:80] or "upload"
    ext = _UNSAFE_NAME.sub("", ext).lower()[:10]
    return f"{stem}.{ext}" if ext else stem


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves to ``folder`` or somewhere below it."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _shown(name: str) -> str:
    return name if len(name) <= 40 else name[:37] + "..."


def upload_path(settings: BotSettings, guild_id: int, filename: str) -> Path:
    """Where to save an attachment: a fresh folder per upload, a sanitised name, its extension.

    The attachment's own name only contributes letters, digits and ``._-`` and never a folder;
    its ending must be one training reads (:mod:`training.sources.formats`).
    """
    name = safe_filename(filename)
    if not formats.readable(name):
        raise InputError(
            f"“{_shown(name)}” is not a file I can train from: attach {formats.IN_WORDS}."
        )
    return _fresh_folder(settings, guild_id) / name


def upload_paths(settings: BotSettings, guild_id: int, filenames: Sequence[str]) -> list[Path]:
    """Where to save a command's attachments: one file as :func:`upload_path`; several are the
    ``.js`` files of one X archive, saved together in a ``data/`` folder of their own."""
    if len(filenames) == 1:
        return [upload_path(settings, guild_id, filenames[0])]
    names = [safe_filename(f) for f in filenames]
    for name in names:
        if Path(name).suffix.lower() != ".js":
            raise InputError(
                "Several files train as one X archive, so each must be a .js file from its "
                f"data/ folder (tweets.js, note-tweet.js, tweets-part1.js…), not “{_shown(name)}”."
            )
    if len({n.lower() for n in names}) != len(names):
        raise InputError("Two of the attached files have the same name; attach each once.")
    folder = _fresh_folder(settings, guild_id) / UPLOAD_ARCHIVE_FOLDER
    folder.mkdir()
    return [folder / name for name in names]


def _fresh_folder(settings: BotSettings, guild_id: int) -> Path:
    uploads = settings.guild_uploads_dir(guild_id).resolve()
    uploads.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S-")
    return Path(tempfile.mkdtemp(prefix=stamp, dir=uploads))


def remove_saved(paths: Iterable[Path]) -> None:
    """Forget the files of a refused request: the files and the fresh folders they sat in."""
    folders: set[Path] = set()
    for path in paths:
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
        with contextlib.suppress(OSError):
            if folder.name == UPLOAD_ARCHIVE_FOLDER:
                folder.parent.rmdir()


async def discard(
    settings: BotSettings, guild_id: int, sources: Iterable[str], *, keep: Collection[str] = ()
) -> None:
    """Delete the upload folders of ``sources`` except those in ``keep`` (what a model still
    trains from); remote sources and anything outside the server's uploads are left alone."""
    uploads = settings.guild_uploads_dir(guild_id)
    for source in dict.fromkeys(sources):
        if source in keep or source in REMOTE_SOURCES:
            continue
        folder = Path(source).parent
        if is_inside(folder, uploads):
            await asyncio.to_thread(_remove_tree, folder, uploads)


def _remove_tree(folder: Path, root: Path) -> None:
    """Remove an upload folder, never anything outside the uploads root (nor the root)."""
    if is_inside(folder, root) and folder.resolve() != root.resolve():
        shutil.rmtree(folder, ignore_errors=True)
