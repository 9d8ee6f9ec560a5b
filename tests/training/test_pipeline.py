"""Choosing a tweet source from what the user named, and collecting cleaned data per handle."""

from __future__ import annotations

import csv
from collections.abc import Callable
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
def settings(
    monkeypatch, make_training_settings: Callable[..., TrainingSettings]
) -> TrainingSettings:
    for name in ("X_BEARER_TOKEN", "DOPPELTWEET_X_BEARER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return make_training_settings(max_file_mb=3, max_uncompressed_mb=5)


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


def test_api_with_a_token_opens_the_x_api_without_exposing_it(
    settings, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    from training.sources.xapi import XApiSource

    settings = make_training_settings(X_BEARER_TOKEN="secret-token-value")
    source = open_source("api", X, settings)
    assert isinstance(source, XApiSource)
    assert "secret-token-value" not in repr(source)


def test_api_refuses_a_bluesky_handle(
    settings, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    settings = make_training_settings(X_BEARER_TOKEN="t")
    with pytest.raises(InputError, match="--bluesky"):
        open_source("api", BSKY, settings)


def test_bluesky_opens_the_configured_appview(
    settings, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    from training.sources.bluesky import BlueskySource

    settings = make_training_settings(bluesky_api_base="http://127.0.0.1:9/")
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
    with pytest.raises(
        InputError, match="neither --api, --bluesky, --mastodon nor an existing file"
    ):
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


# --- Mastodon: handles, specs, the data table's skipped rows -----------------------------------

MASTO = parse_handle("mastodon:@alice@social.example")


@pytest.mark.parametrize(
    "text",
    [
        "mastodon:@Alice@Social.Example",
        "mastodon:alice@social.example",
        "@alice@social.example",
        "alice@social.example",
        "  MASTODON:@alice@social.example ",
    ],
)
def test_mastodon_handles_parse_in_every_accepted_form(text: str) -> None:
    handle = parse_handle(text)
    assert (handle.name, handle.platform) == ("alice@social.example", "mastodon")
    assert (handle.user, handle.instance) == ("alice", "social.example")
    assert handle.display == "@alice@social.example"
    assert handle.spec == "mastodon:@alice@social.example"
    assert parse_handle(handle.spec) == handle  # what the bot passes the CLI reads back


@pytest.mark.parametrize(
    "text",
    [
        "mastodon:@alice",  # no server
        "mastodon:@alice@localhost",  # one label: not a public server
        "@alice@127.0.0.1",  # an address, not a domain
        "@alice@social.example:8080",  # no ports
        "@alice@social.example/../../etc",
        "@../x@social.example",
        "@al.ice@social.example",
        "@alice@bob@social.example",
        "@" + "a" * 31 + "@social.example",  # Mastodon names have at most 30 characters
        "@alice@" + "a" * 160 + ".example",
        "mastodon:@@social.example",
        "@alice@social_x.example",
    ],
)
def test_malformed_mastodon_handles_are_one_sentence(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_handle(text)
    message = str(caught.value)
    assert "is not a Mastodon handle: use mastodon:@name@server" in message
    assert message.count(".") >= 1 and "\n" not in message


def test_model_names_of_mastodon_handles_are_safe_and_never_collide() -> None:
    from training.handles import handle_from_name, model_name
    from training.store import check_model_name

    masto, bsky, x = MASTO, parse_handle("bluesky:alice.social.example"), parse_handle("alice")
    names = {
        model_name([masto]),
        model_name([bsky]),
        model_name([x]),
        model_name([masto, x]),
        model_name([masto, bsky]),
        model_name([parse_handle("@alice_at@social.example")]),
        model_name([parse_handle("@alice@at.social.example")]),
    }
    assert len(names) == 7
    assert model_name([masto]) == "alice_at_social.example"
    assert model_name([masto, x]) == "alice+alice_at_social.example"
    for name in names:
        assert check_model_name(name) == name  # the model store takes it as a folder name
        assert "/" not in name and "@" not in name and ".." not in name
    assert handle_from_name("alice@social.example") == masto
    assert handle_from_name("alice.social.example") == bsky
    assert handle_from_name("alice") == x


def test_handles_too_long_together_for_one_model_name_are_one_sentence() -> None:
    long = [f"@{c * 30}@{'b' * 60}.{'c' * 60}.example" for c in "xyz"]
    with pytest.raises(InputError, match="too long to name one model"):
        handles_and_specs(long)


def test_mastodon_flag_and_from_word_name_the_mastodon_api() -> None:
    handles, specs = handles_and_specs(["@alice@social.example"], mastodon=True)
    assert handles == [MASTO] and specs == ["mastodon"]
    assert handles_and_specs([MASTO.spec], paths=["mastodon"])[1] == ["mastodon"]


def test_collect_reads_each_network_handle_from_its_network_by_default(
    settings, fake_sources
) -> None:
    collect([BSKY, MASTO], [], settings)
    assert fake_sources == [("bluesky", "alice.bsky.social"), ("mastodon", "alice@social.example")]


def test_the_mastodon_spec_for_a_bluesky_handle_is_one_sentence(settings) -> None:
    with pytest.raises(InputError) as caught:
        open_source("mastodon", BSKY, settings)
    assert str(caught.value) == (
        "@alice.bsky.social is a Bluesky handle; name a Mastodon handle such as "
        "mastodon:@alice@mastodon.social."
    )
    with pytest.raises(InputError, match="is a Mastodon handle; name a Bluesky handle"):
        open_source("bluesky", MASTO, settings)


def _mastodon_zip(tmp_path: Path) -> Path:
    from tests.training.sources.mastodon_archive_files import write_zip

    return write_zip(tmp_path / "archive.zip")


def test_a_mastodon_archive_reads_for_a_mastodon_handle_with_skipped_rows(
    settings, tmp_path
) -> None:
    from training.cleaning import DataTable

    table = collect([MASTO], [str(_mastodon_zip(tmp_path))], settings)
    [data] = table.handles
    assert data.counts() == {
        "tweets_downloaded": 4,
        "retweets": 1,
        "short_tweets": 0,
        "tweets_kept": 3,
        "content_warned": 1,
        "not_public": 2,
    }
    assert table.to_markdown().splitlines()[-2:] == [
        "| Content-warned (skipped) | 1 |",
        "| Not public (skipped) | 2 |",
    ]
    table.save(tmp_path / "saved")
    loaded = DataTable.load(tmp_path / "saved")
    assert loaded.to_dict() == table.to_dict() and loaded.handles[0].handle == MASTO


def test_a_mastodon_archive_of_someone_else_is_refused_for_a_mastodon_handle(
    settings, tmp_path
) -> None:
    with pytest.raises(InputError, match=r"belongs to @alice, not @bob@social\.example\."):
        collect([parse_handle("@bob@social.example")], [str(_mastodon_zip(tmp_path))], settings)


def test_tables_of_other_sources_keep_the_seeds_four_rows(settings, tmp_path) -> None:
    rows = [{"text": f"jack says hello and more words {n}"} for n in range(5)]
    table = collect([X], [str(write_csv(tmp_path / "t.csv", rows))], settings)
    assert list(table.to_dict()["jack"]) == [
        "tweets_downloaded",
        "retweets",
        "short_tweets",
        "tweets_kept",
    ]
    assert table.skip_rows() == []
    assert [line.split(" | ")[0] for line in table.to_markdown().splitlines()[2:]] == [
        "| Tweets downloaded",
        "| Retweets",
        "| Short tweets",
        "| Tweets kept",
    ]


def test_a_table_mixing_sources_marks_the_skipped_rows_of_the_others(settings, tmp_path) -> None:
    rows = [{"text": f"jack says hello and more words {n}"} for n in range(5)]
    csv_path = write_csv(tmp_path / "t.csv", rows)
    table = collect([X, MASTO], [str(csv_path), str(_mastodon_zip(tmp_path))], settings)
    assert table.to_markdown().splitlines()[-2:] == [
        "| Content-warned (skipped) | 1 | - |",
        "| Not public (skipped) | 2 | - |",
    ]
