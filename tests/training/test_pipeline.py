"""Choosing a tweet source from what the user named, and collecting cleaned data per handle."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from training import pipeline
from training.config import TrainingSettings
from training.errors import InputError
from training.handles import parse_handle
from training.pipeline import collect, handles_and_specs, open_source

X = parse_handle("@jack")
BSKY = parse_handle("bluesky:alice.bsky.social")


@pytest.fixture
def settings(monkeypatch) -> TrainingSettings:
    for name in ("X_BEARER_TOKEN", "DOPPELTWEET_X_BEARER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return TrainingSettings(_env_file=None, max_file_mb=3, max_uncompressed_mb=5)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- open_source -------------------------------------------------------------------------------


def test_api_without_a_token_says_how_to_set_it_and_what_it_costs(settings) -> None:
    with pytest.raises(InputError, match="X_BEARER_TOKEN") as caught:
        open_source("api", X, settings)
    assert "$" in str(caught.value) and "--from" in str(caught.value)


def test_api_with_a_token_opens_the_x_api_without_exposing_it(settings) -> None:
    from training.sources.xapi import XApiSource

    settings = TrainingSettings(_env_file=None, X_BEARER_TOKEN="secret-token-value")
    source = open_source("api", X, settings)
    assert isinstance(source, XApiSource)
    assert "secret-token-value" not in repr(source)


def test_api_refuses_a_bluesky_handle(settings) -> None:
    settings = TrainingSettings(_env_file=None, X_BEARER_TOKEN="t")
    with pytest.raises(InputError, match="--bluesky"):
        open_source("api", BSKY, settings)


def test_bluesky_opens_the_configured_appview(settings) -> None:
    from training.sources.bluesky import BlueskySource

    settings = TrainingSettings(_env_file=None, bluesky_api_base="http://127.0.0.1:9/")
    source = open_source("bluesky", BSKY, settings)
    assert isinstance(source, BlueskySource)
    assert source.base_url == "http://127.0.0.1:9"


def test_bluesky_refuses_an_x_handle(settings) -> None:
    with pytest.raises(InputError, match=r"bluesky:alice\.bsky\.social"):
        open_source("bluesky", X, settings)


@pytest.mark.parametrize("spec", ["missing.csv", "", "nowhere/tweets.js"])
def test_a_path_that_does_not_exist_is_one_sentence(
    settings, spec: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="neither --api, --bluesky, --mastodon nor an existing file"):
        open_source(spec, X, settings)


def test_a_csv_opens_the_tabular_source_with_the_size_limit(settings, tmp_path) -> None:
    from training.sources.tabular import TabularSource

    path = write_csv(tmp_path / "t.csv", [{"text": "hello there world"}])
    source = open_source(str(path), X, settings)
    assert isinstance(source, TabularSource)
    assert source.max_file_bytes == 3 * 1024 * 1024


def test_an_archive_opens_the_archive_source_with_both_limits(settings, tmp_path) -> None:
    from training.sources.archive import ArchiveSource

    data = tmp_path / "data"
    data.mkdir()
    (data / "tweets.js").write_text("window.YTD.tweets.part0 = []", encoding="utf-8")
    source = open_source(str(tmp_path / "data" / "tweets.js"), X, settings)
    assert isinstance(source, ArchiveSource)
    assert source.max_file_bytes == 3 * 1024 * 1024
    assert source.max_uncompressed_bytes == 5 * 1024 * 1024


def test_a_folder_without_an_archive_is_one_sentence(settings, tmp_path) -> None:
    with pytest.raises(InputError, match="folder"):
        open_source(str(tmp_path), X, settings)


# --- collect -----------------------------------------------------------------------------------


@pytest.fixture
def fake_sources(monkeypatch, fake_source_factory, make_tweet, long_tweets):
    """Every spec opens a fake source: 3 kept tweets, 1 retweet and 1 short tweet per handle."""
    opened: list[tuple[str, str]] = []
    tweets = {
        name: [
            *(make_tweet(t) for t in long_tweets(name, 3)),
            make_tweet("RT @x: retweeted words here", is_retweet=True),
            make_tweet("@bob thanks!"),
        ]
        for name in ("jack", "bob", "alice.bsky.social")
    }

    def fake_open(spec, handle, settings):
        opened.append((spec, handle.name))
        return fake_source_factory(tweets)

    monkeypatch.setattr(pipeline, "open_source", fake_open)
    return opened


def test_collect_pairs_one_source_per_handle(settings, fake_sources) -> None:
    table = collect([parse_handle("bob"), X], ["b.csv", "j.zip"], settings)
    assert fake_sources == [("b.csv", "bob"), ("j.zip", "jack")]
    assert table.to_dict() == {
        name: {"tweets_downloaded": 5, "retweets": 1, "short_tweets": 1, "tweets_kept": 3}
        for name in ("bob", "jack")
    }
    assert table.model_name == "bob-jack"


def test_collect_opens_a_shared_source_once(settings, fake_sources) -> None:
    table = collect([parse_handle("bob"), X], ["all.csv"], settings)
    assert fake_sources == [("all.csv", "bob")]
    assert [d.tweets_kept for d in table.handles] == [3, 3]


def test_collect_reads_bluesky_handles_from_bluesky_by_default(settings, fake_sources) -> None:
    collect([BSKY], [], settings)
    assert fake_sources == [("bluesky", "alice.bsky.social")]


def test_collect_without_a_source_for_an_x_handle_is_one_sentence(settings, fake_sources) -> None:
    with pytest.raises(InputError, match="Say where the tweets of @jack come from"):
        collect([BSKY, X], [], settings)


def test_collect_refuses_a_mismatched_number_of_sources(settings, fake_sources) -> None:
    handles = [parse_handle("a"), parse_handle("b"), parse_handle("c")]
    with pytest.raises(InputError, match="not 2 for 3 handles"):
        collect(handles, ["a.csv", "b.csv"], settings)


def test_collect_does_not_apply_the_data_gates(settings, fake_sources) -> None:
    table = collect([X], ["x.csv"], settings)
    assert table.handles[0].chars_kept < 6000  # the caller decides whether to check()


def test_collect_reads_one_csv_for_two_handles_end_to_end(settings, tmp_path) -> None:
    rows = [
        {
            "created_at": f"10/{day:02d}/17 12:00",
            "text": f"{name} says hello &amp; more words {day}",
            "user": name,
        }
        for day in range(1, 21)
        for name in ("jack", "bob")
    ]
    rows.append({"created_at": "10/25/17 12:00", "text": "RT @jack: copied words", "user": "bob"})
    rows.append({"created_at": "10/26/17 12:00", "text": "see https://t.co/x", "user": "bob"})
    path = write_csv(tmp_path / "both.csv", rows)
    table = collect([X, parse_handle("bob")], [str(path)], settings)
    assert table.to_dict() == {
        "bob": {"tweets_downloaded": 22, "retweets": 1, "short_tweets": 1, "tweets_kept": 20},
        "jack": {"tweets_downloaded": 20, "retweets": 0, "short_tweets": 0, "tweets_kept": 20},
    }
    assert table.handles[0].kept[0] == "bob says hello & more words 20"  # newest first, decoded


# --- handles_and_specs -------------------------------------------------------------------------


def test_handles_stay_in_the_order_typed_so_each_from_pairs_with_its_handle() -> None:
    handles, specs = handles_and_specs(["@Zed", "@amy"], paths=["zed.zip", "amy.csv"])
    assert [h.name for h in handles] == ["zed", "amy"]
    assert specs == ["zed.zip", "amy.csv"]


def test_bluesky_flag_reads_plain_handles_as_bluesky_handles() -> None:
    handles, specs = handles_and_specs(
        ["@alice.bsky.social", "bluesky:bob.bsky.social"], bluesky=True
    )
    assert [(h.name, h.platform) for h in handles] == [
        ("alice.bsky.social", "bluesky"),
        ("bob.bsky.social", "bluesky"),
    ]
    assert specs == ["bluesky"]


def test_api_flag_is_one_shared_spec() -> None:
    assert handles_and_specs(["jack", "bob"], api=True)[1] == ["api"]


@pytest.mark.parametrize(
    ("texts", "message"),
    [([], "at least one handle"), (["a", "A"], "only once"), (["a", "b", "c", "d"], "at most 3")],
)
def test_handles_and_specs_validates_the_handles(texts: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        handles_and_specs(texts)
