"""Guards for untrusted archives: member paths that escape, and zip or tar bombs.

Any archive a user sends is hostile until checked: a member named ``../x`` or ``/etc/x`` is
refused, a member that claims to inflate far beyond its compressed size is refused from its header,
and every decompressing read is counted against a budget so no header can lie its way past it.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from training.errors import InputError

#: Refuse members that inflate more than this (text JSON compresses ~5-20x; bombs ~1000x).
MAX_COMPRESSION_RATIO = 100
#: Members this small are never a bomb, whatever their ratio.
RATIO_CHECK_FLOOR = 1024 * 1024
#: Everything read from a zip together may inflate at most this much over the zip's own size
#: (many small members each under RATIO_CHECK_FLOOR are a bomb too)...
MAX_TOTAL_RATIO = 100
#: ...except that a small zip may always inflate to this much.
TOTAL_RATIO_FLOOR = 4 * 1024 * 1024


def unsafe_member(name: str) -> bool:
    """Whether a member's name leaves the archive (absolute, a drive, or ``..``)."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"[A-Za-z]:", normalised):
        return True
    return ".." in PurePosixPath(normalised).parts


class InflationBudget(io.RawIOBase):
    """A decompressing stream that stops at the first byte over ``limit``.

    It counts every byte the decompressor gives, whether the reader keeps it or skips past it,
    so a small compressed file cannot make a reader unpack more than ``limit``, whatever its
    members' headers claim.
    """

    def __init__(self, stream: BinaryIO, limit: int, label: str) -> None:
        super().__init__()
        self._stream = stream
        self.limit = limit
        self.label = label
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        room = self.limit - self.total + 1
        view = memoryview(buffer).cast("B")
        data = self._stream.read(min(len(view), room))
        self.total += len(data)
        if self.total > self.limit:
            raise InputError(
                f"{self.label} looks like an archive bomb: it unpacks to more than "
                f"{mb(self.limit)} MB."
            )
        view[: len(data)] = data
        return len(data)


def check_ratio(info: zipfile.ZipInfo, label: str) -> None:
    """Refuse a zip member whose header claims a bomb's compression ratio."""
    if info.file_size < RATIO_CHECK_FLOOR:
        return
    if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise InputError(
            f"{label} looks like a zip bomb: {member_name(info.filename)} claims to inflate "
            f"{info.file_size // max(info.compress_size, 1):,} times."
        )


def unreadable(name: str, error: OSError) -> InputError:
    """The one sentence for an input file the operating system would not read."""
    return InputError(f"{name} cannot be read ({error.strerror or error}).")


def check_input_size(size: int, max_bytes: int, name: str) -> None:
    """Refuse an input file over ``max_bytes`` (``DOPPELTWEET_MAX_FILE_MB``), in one sentence."""
    if size > max_bytes:
        raise InputError(
            f"{name} is {mb(size)} MB, over the {mb(max_bytes)} MB limit for input files."
        )


def check_member(name: str, label: str) -> None:
    """Refuse a member whose name leaves the archive (:func:`unsafe_member`), in one sentence."""
    if unsafe_member(name):
        raise InputError(
            f"{label} is unsafe: its member {name[:80]!r} would be written outside the archive "
            "folder."
        )


def read_zip_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, label: str
) -> bytes:
    """A zip member's bytes, never more than its header declares; a bomb's ratio, encryption, an
    unknown compression and damage are each one sentence."""
    check_ratio(info, label)
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
    except RuntimeError as error:  # encrypted members
        raise InputError(f"{label} is password-protected; export it again.") from error
    except NotImplementedError as error:
        raise InputError(f"{name} in {label} uses a compression method we cannot read.") from error
    except Exception as error:  # zlib.error, BadZipFile (CRC), EOFError, ...: all damage
        raise InputError(f"{name} in {label} is damaged and cannot be read.") from error
    if len(data) > info.file_size:
        raise InputError(f"{name} in {label} is larger than its zip entry declares.")
    return data


def member_name(name: str) -> str:
    """A member's file name without its folders (either slash)."""
    return PurePosixPath(name.replace("\\", "/")).name


def mb(size: int) -> str:
    """A size in MB as messages show it (``1.5``, ``10``)."""
    return f"{size / (1024 * 1024):,.1f}".rstrip("0").rstrip(".")
