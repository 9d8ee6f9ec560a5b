"""The untrusted-archive guards on their own: escaping member names, bomb ratios, the budget."""

from __future__ import annotations

import io
import zipfile

import pytest

from training.errors import InputError
from training.sources.guards import (
    MAX_COMPRESSION_RATIO,
    RATIO_CHECK_FLOOR,
    InflationBudget,
    check_ratio,
    mb,
    member_name,
    unsafe_member,
)


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("data/tweets.js", False),
        ("outbox.json", False),
        ("../etc/passwd", True),
        ("data/../../x", True),
        ("/etc/passwd", True),
        ("C:/Windows/x", True),
        ("..\\x", True),
    ],
)
def test_a_member_may_not_leave_the_archive(name: str, unsafe: bool) -> None:
    assert unsafe_member(name) is unsafe


def test_member_names_drop_their_folders_whatever_the_slash() -> None:
    assert member_name("data/tweets.js") == member_name("data\\tweets.js") == "tweets.js"


def test_a_member_claiming_a_bombs_ratio_is_refused_from_its_header() -> None:
    info = zipfile.ZipInfo("data/tweets.js")
    info.file_size, info.compress_size = RATIO_CHECK_FLOOR, RATIO_CHECK_FLOOR // 2
    check_ratio(info, "a.zip")  # an ordinary ratio
    info.file_size = RATIO_CHECK_FLOOR * 4
    info.compress_size = info.file_size // (MAX_COMPRESSION_RATIO + 1)
    with pytest.raises(InputError, match=r"a\.zip looks like a zip bomb: tweets\.js claims"):
        check_ratio(info, "a.zip")


def test_the_budget_stops_at_the_first_byte_over_its_limit() -> None:
    within = io.BufferedReader(InflationBudget(io.BytesIO(b"x" * 100), 100, "a.tar.gz"))
    assert len(within.read()) == 100
    over = io.BufferedReader(InflationBudget(io.BytesIO(b"x" * 101), 100, "a.tar.gz"))
    with pytest.raises(InputError, match=r"a\.tar\.gz looks like an archive bomb"):
        over.read()


def test_sizes_read_as_megabytes_without_trailing_zeros() -> None:
    assert mb(10 * 1024 * 1024) == "10"
    assert mb(1536 * 1024) == "1.5"


def _zip_with(name: str, data: bytes, *, encrypted: bool = False) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(name, data)
    raw = bytearray(buffer.getvalue())
    if encrypted:  # the encryption flag in the local header and the central directory entry
        raw[6] |= 1
        central = raw.rindex(b"PK\x01\x02")
        raw[central + 8] |= 1
    return zipfile.ZipFile(io.BytesIO(bytes(raw)))


def test_a_zip_member_is_read_whole_and_its_refusals_are_one_sentence_each() -> None:
    from training.sources.guards import check_member, read_zip_member

    archive = _zip_with("outbox.json", b'{"a": 1}')
    info = archive.getinfo("outbox.json")
    assert read_zip_member(archive, info, "outbox.json", "export.zip") == b'{"a": 1}'

    locked = _zip_with("outbox.json", b'{"a": 1}', encrypted=True)
    with pytest.raises(InputError, match=r"^export\.zip is password-protected; export it again\.$"):
        read_zip_member(locked, locked.getinfo("outbox.json"), "outbox.json", "export.zip")

    with pytest.raises(InputError, match=r"^export\.zip is unsafe: its member '\.\./x' would be"):
        check_member("../x", "export.zip")
    check_member("data/outbox.json", "export.zip")
