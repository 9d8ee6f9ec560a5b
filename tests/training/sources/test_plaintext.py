"""Plain-text files: one post per line (training/sources/plaintext.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainingSettings
from training.errors import InputError
from training.handles import parse_handle
from training.pipeline import open_source
from training.sources.plaintext import PlainTextSource

ALICE = parse_handle("@alice")


def test_every_non_empty_line_is_one_post(tmp_path: Path) -> None:
    path = tmp_path / "posts.txt"
    path.write_text(
        "Dear diary, today I learned to bake bread\n\n"
        "RT @bob: a retweet is counted, not kept\n"
        "  @bob thanks for the recipe, it worked  \n",
        encoding="utf-8",
    )
    tweets = PlainTextSource(path, max_file_bytes=10_000).fetch(ALICE)
    assert [t.text for t in tweets] == [
        "Dear diary, today I learned to bake bread",
        "RT @bob: a retweet is counted, not kept",
        "@bob thanks for the recipe, it worked",
    ]
    assert [t.is_retweet for t in tweets] == [False, True, False]
    assert tweets[2].is_reply
    assert len({t.id for t in tweets}) == 3


def test_the_pipeline_reads_txt_as_plain_text_not_csv(tmp_path: Path) -> None:
    path = tmp_path / "posts.txt"
    path.write_text("Dear diary, one, two, three\n", encoding="utf-8")
    source = open_source(str(path), ALICE, TrainingSettings())
    assert isinstance(source, PlainTextSource)
    assert source.fetch(ALICE)[0].text == "Dear diary, one, two, three"


def test_legacy_encodings_are_decoded(tmp_path: Path) -> None:
    path = tmp_path / "posts.txt"
    path.write_bytes("Caf\u00e9 au lait and cr\u00e8me br\u00fbl\u00e9e tonight\n".encode("cp1252"))
    tweets = PlainTextSource(path, max_file_bytes=10_000).fetch(ALICE)
    assert tweets[0].text == "Caf\u00e9 au lait and cr\u00e8me br\u00fbl\u00e9e tonight"


@pytest.mark.parametrize(
    ("content", "match"), [(b"", "is empty"), (b"\n \n", "is empty"), (b"x" * 200, "over the")]
)
def test_bad_files_are_refused_in_one_sentence(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "posts.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        PlainTextSource(path, max_file_bytes=100).fetch(ALICE)


def test_the_cli_reads_a_txt_file_given_with_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from training import config
    from training.cli import main

    monkeypatch.setattr(config, "get_settings", lambda: TrainingSettings(_env_file=None))
    path = tmp_path / "posts.txt"
    lines = [f"post number {i} about bread and the weather today" for i in range(150)]
    path.write_text("\n".join([*lines, "RT @bob: not mine", "hi"]) + "\n", encoding="utf-8")
    assert main(["data", "@alice", "--from", str(path), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == {
        "alice": {"tweets_downloaded": 152, "retweets": 1, "short_tweets": 1, "tweets_kept": 150}
    }


def test_a_file_just_over_the_limit_reads_as_over_it(tmp_path: Path) -> None:
    path = tmp_path / "posts.txt"
    path.write_bytes(b"a post\n" * 300)  # 2,100 bytes
    with pytest.raises(InputError) as refused:
        PlainTextSource(path, max_file_bytes=2_099).fetch(ALICE)
    assert str(refused.value) == (
        "posts.txt is 2,100 bytes, over the limit of 2,099 bytes for input files."
    )
