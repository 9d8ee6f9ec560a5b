"""MastodonArchiveSource: the documented outbox structure, visibility, HTML, and hostile files."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.training.sources.mastodon_archive_files import (
    actor_bytes,
    items,
    outbox_bytes,
    write_zip,
)
from tests.training.sources.mastodon_server import LINK, MENTION
from training.config import TrainingSettings
from training.errors import InputError
from training.handles import parse_handle
from training.pipeline import collect, open_source
from training.sources.mastodon_archive import (
    MastodonArchiveSource,
    html_to_text,
    looks_like_mastodon_archive,
)

MB = 1024 * 1024
ALICE = parse_handle("@alice")


def source(path: Path, **kwargs: object) -> MastodonArchiveSource:
    return MastodonArchiveSource(
        path, max_file_bytes=50 * MB, max_uncompressed_bytes=20 * MB, **kwargs
    )


def test_only_public_and_unlisted_posts_and_boosts_are_read(tmp_path) -> None:
    src = source(write_zip(tmp_path / "archive.zip"))
    posts = src.fetch(ALICE)

    assert not any("SECRET" in p.text for p in posts)
    assert src.private == 2 and src.skipped == 1
    assert [p.is_retweet for p in posts] == [True, False, False, False]
    texts = [p.text for p in posts if not p.is_retweet]
    assert texts == [
        "@bob thanks for the tip\n\nsecond paragraph\nnext line",
        "unlisted with a link https://example.com/a/very/long/path",
        "public post about &amp; tea time today",
    ]
    assert posts[1].is_reply and not posts[3].is_reply


def test_content_warnings_can_be_included(tmp_path) -> None:
    posts = source(write_zip(tmp_path / "a.zip"), include_sensitive=True).fetch(ALICE)
    assert any("spoiler" in p.text for p in posts)


def test_tar_gz_archive_reads_the_same(tmp_path) -> None:
    path = tmp_path / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("outbox.json", outbox_bytes(items())), ("actor.json", actor_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert len(source(path).fetch(ALICE)) == 4


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, streamed (a bomb's media member is never held in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def write_tar(path: Path, mode: str, members: list[tuple[str, int | bytes]]) -> Path:
    """A tarball of ``(name, bytes or a count of zero bytes)``, compressed as ``mode`` says."""
    with tarfile.open(path, mode) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, int):
                info.size = data
                archive.addfile(info, _Zeros(data))
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def budgets(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every decompression budget a tarball read opens, to see how much it unpacked."""
    from training.sources import guards, mastodon_archive

    opened: list = []

    class Recorded(guards.InflationBudget):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(mastodon_archive, "InflationBudget", Recorded)
    return opened


POSTS = [("outbox.json", outbox_bytes(items())), ("actor.json", actor_bytes())]


def test_a_bzip2_bomb_named_tar_gz_is_refused_before_unpacking(tmp_path, budgets) -> None:
    path = write_tar(tmp_path / "archive.tar.gz", "w:bz2", [("media/big.bin", 64 * MB), *POSTS])
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(InputError) as raised:
        source(path).fetch(ALICE)
    assert str(raised.value) == (
        "archive.tar.gz holds bzip2-compressed data, not the gzip its name says."
    )
    assert budgets == []
    plain = write_tar(tmp_path / "archive.tar", "w:bz2", POSTS)
    with pytest.raises(InputError, match="holds bzip2-compressed data, not the plain tar"):
        source(plain).fetch(ALICE)


def test_a_gzip_bomb_stops_at_the_first_byte_over_the_budget(tmp_path, budgets) -> None:
    """A media member that claims nothing unusual but unpacks 64 MB from ~64 KB, before the
    post files: the members skipped count, and unpacking stops at the budget."""
    path = write_tar(tmp_path / "archive.tar.gz", "w:gz", [("media/big.bin", 64 * MB), *POSTS])
    size = path.stat().st_size
    with pytest.raises(InputError, match=r"^archive\.tar\.gz looks like an archive bomb"):
        source(path).fetch(ALICE)
    (budget,) = budgets
    assert budget.limit == max(4 * MB, 100 * size) < 64 * MB
    assert budget.total == budget.limit + 1


def test_members_after_the_post_files_are_never_unpacked(tmp_path, budgets) -> None:
    path = write_tar(tmp_path / "archive.tgz", "w:gz", [*POSTS, ("media/big.bin", 64 * MB)])
    assert len(source(path).fetch(ALICE)) == 4
    (budget,) = budgets
    assert budget.total < 1 * MB


def test_a_plain_tar_is_read_and_a_truncated_one_is_one_sentence(tmp_path) -> None:
    path = write_tar(tmp_path / "archive.tar", "w", POSTS)
    assert len(source(path).fetch(ALICE)) == 4
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes((write_tar(tmp_path / "x.tar.gz", "w:gz", POSTS)).read_bytes()[:200])
    with pytest.raises(
        InputError, match=r"^broken\.tar\.gz is not a readable \.tar\.gz archive\.$"
    ):
        source(broken).fetch(ALICE)


def test_owner_is_checked_against_actor_json(tmp_path) -> None:
    path = write_zip(tmp_path / "a.zip", owner="mallory")
    with pytest.raises(InputError, match="belongs to @mallory, not @alice"):
        source(path).fetch(ALICE)


def test_zip_slip_member_is_refused(tmp_path) -> None:
    path = write_zip(tmp_path / "a.zip", extra={"../evil.txt": b"x"})
    with pytest.raises(InputError, match="unsafe"):
        source(path).fetch(ALICE)


def test_zip_bomb_outbox_is_refused(tmp_path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("outbox.json", b" " * (8 * MB))
    with pytest.raises(InputError, match="zip bomb"):
        source(path).fetch(ALICE)


def test_unpacked_size_limit(tmp_path) -> None:
    path = write_zip(tmp_path / "a.zip")
    src = MastodonArchiveSource(path, max_file_bytes=50 * MB, max_uncompressed_bytes=100)
    with pytest.raises(InputError, match="over the"):
        src.fetch(ALICE)


def test_garbled_outbox_is_one_sentence(tmp_path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("outbox.json", b'{"orderedItems": [')
    with pytest.raises(InputError, match="truncated or garbled"):
        source(path).fetch(ALICE)


def test_html_to_text_keeps_mentions_and_whole_links() -> None:
    assert html_to_text(f"<p>{MENTION} see {LINK}</p>") == (
        "@bob see https://example.com/a/very/long/path"
    )


def test_pipeline_recognises_a_mastodon_archive(tmp_path) -> None:
    path = write_zip(tmp_path / "archive.zip")
    assert looks_like_mastodon_archive(path)
    settings = TrainingSettings()
    assert isinstance(open_source(str(path), ALICE, settings), MastodonArchiveSource)
    table = collect([ALICE], [str(path)], settings)
    column = table.handles[0]
    assert (column.tweets_downloaded, column.retweets, len(column.kept)) == (4, 1, 3)
    assert not any("SECRET" in text for text in column.kept)


def test_a_password_protected_zip_is_one_sentence_as_for_an_x_archive(tmp_path) -> None:
    path = write_zip(tmp_path / "locked.zip")
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    while central != -1:  # every member marked encrypted, in its local header and its entry
        local = int.from_bytes(raw[central + 42 : central + 46], "little")
        raw[local + 6] |= 1
        raw[central + 8] |= 1
        central = raw.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"^locked\.zip is password-protected; export it again\.$"):
        source(path).fetch(ALICE)
