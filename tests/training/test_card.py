"""The model card: huggingtweets' layout, and numbers identical to the data pipeline's."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from training.card import render_card
from training.cleaning import DataTable, clean_handle
from training.handles import parse_handle
from training.sources.base import RawTweet


def _tweets(texts: list[str], retweet_every: int = 0) -> list[RawTweet]:
    return [
        RawTweet(str(i), None, text, bool(retweet_every and i % retweet_every == 0), False, "csv")
        for i, text in enumerate(texts)
    ]


def _pipeline_table() -> DataTable:
    alice = [f"tweet number {i} about the moon and https://t.co/x{i}" for i in range(40)]
    alice += ["@bob thanks!", "ok", "RT @carol: something I liked a lot today"]
    bob = [f"bob says hello world number {i}" for i in range(25)] + ["#tag @x"]
    return DataTable(
        [
            clean_handle(parse_handle("@alice"), _tweets(alice, retweet_every=7)),
            clean_handle(parse_handle("@bob"), _tweets(bob)),
        ]
    )


_RECORD = {
    "base_model": "gpt2",
    "lora": False,
    "config": {"epochs": 4, "learning_rate": 1.372e-4, "block_size": 1024, "batch_size": 1},
    "seeds": {"seed": 42},
    "metrics": {
        "steps": 120,
        "train_tokens": 122880,
        "val_loss_before": 4.5,
        "val_loss_after": 3.25,
        "perplexity_before": 90.0171,
        "perplexity_after": 25.7903,
        "tweet_perplexity_before": 101.5,
        "tweet_perplexity_after": 30.25,
    },
    "timings": {"train_s": 185.2},
    "device": "cuda",
    "dtype": "bfloat16",
}


def _markdown_rows(card: str) -> dict[str, list[str]]:
    rows = {}
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 2:
            rows[cells[0]] = cells[1:]
    return rows


def test_card_table_has_one_column_per_handle_with_the_pipelines_numbers() -> None:
    table = _pipeline_table()
    card = render_card(table, _RECORD, model_ref="alice/doppeltweet")
    rows = _markdown_rows(card)
    assert rows["Data"] == ["alice", "bob"]
    counts = table.to_dict()
    for label, key in [
        ("Tweets downloaded", "tweets_downloaded"),
        ("Retweets", "retweets"),
        ("Short tweets", "short_tweets"),
        ("Tweets kept", "tweets_kept"),
    ]:
        assert rows[label] == [str(counts["alice"][key]), str(counts["bob"][key])]
    # The invariant of the seed's table holds in the card.
    for column in range(2):
        downloaded, retweets, short, kept = (
            int(rows[label][column])
            for label in ("Tweets downloaded", "Retweets", "Short tweets", "Tweets kept")
        )
        assert downloaded == retweets + short + kept


def test_card_front_matter_is_the_seeds() -> None:
    card = render_card(_pipeline_table(), _RECORD, model_ref="x")
    match = re.match(r"---\n(.*?)\n---\n", card, re.DOTALL)
    assert match
    front = yaml.safe_load(match.group(1))
    assert front["language"] == "en"
    assert front["thumbnail"].startswith("https://")
    assert "huggingtweets" in front["tags"]
    assert front["widget"] == [{"text": "My dream is"}]


def test_one_handle_is_an_ai_bot_and_several_are_an_ai_cyborg() -> None:
    table = _pipeline_table()
    single = DataTable([table.handles[0]])
    assert "AI BOT" in render_card(single, _RECORD, model_ref="x")
    cyborg = render_card(table, _RECORD, model_ref="x")
    assert "AI CYBORG" in cyborg
    assert "@alice @bob" in cyborg


def test_card_has_every_section_with_the_real_training_numbers() -> None:
    card = render_card(_pipeline_table(), _RECORD, model_ref="alice/doppeltweet")
    for section in (
        "## How does it work?",
        "## Training data",
        "## Training procedure",
        "## How to use",
        "## Limitations and bias",
    ):
        assert section in card
    rows = _markdown_rows(card)
    assert rows["Base model"] == ["gpt2"]
    assert rows["Epochs"] == ["4"]
    assert rows["Learning rate"] == ["0.0001372"]
    assert rows["Optimizer steps"] == ["120"]
    assert rows["Seed"] == ["42"]
    assert rows["Validation perplexity before → after"] == ["90.017 → 25.790"]
    tweet_row = "Validation perplexity (tweet-aligned blocks) before → after"
    assert rows[tweet_row] == ["101.500 → 30.250"]
    assert rows["Training time"] == ["3 min 5 s"]
    assert rows["Device"] == ["cuda (bfloat16)"]
    assert "pipeline('text-generation', model='alice/doppeltweet')" in card


def test_a_model_trained_before_the_tweet_aligned_perplexity_has_no_such_row() -> None:
    metrics = {k: v for k, v in _RECORD["metrics"].items() if not k.startswith("tweet_perplexity")}
    card = render_card(_pipeline_table(), {**_RECORD, "metrics": metrics}, model_ref="x")
    rows = _markdown_rows(card)
    assert rows["Validation perplexity before → after"] == ["90.017 → 25.790"]
    assert not any("tweet-aligned" in label for label in rows)


def test_trained_models_card_matches_its_data_table(tiny_model_dir: Path) -> None:
    table = DataTable.load(tiny_model_dir)
    card = (tiny_model_dir / "README.md").read_text(encoding="utf-8")
    assert table.to_markdown() in card
    assert "AI BOT" in card
    assert str(tiny_model_dir.resolve()) in card  # the local folder is what pipeline() loads


def test_trained_models_card_shows_how_like_the_person_it_writes(tiny_model_dir: Path) -> None:
    import json

    record = json.loads((tiny_model_dir / "training.json").read_text(encoding="utf-8"))
    likeness = record["likeness"]
    assert likeness["samples"] > 0 and likeness["candidates"] >= likeness["samples"]
    assert 0.0 <= likeness["copy_rate_pct"] <= 100.0
    assert likeness["real"]["tweets"] > 0
    assert likeness["generated"]["tweets"] == likeness["samples"]
    card = (tiny_model_dir / "README.md").read_text(encoding="utf-8")
    assert "## How like them it writes" in card
    assert "| Style | Real tweets | Generated |" in card
    assert f"| Copies of training tweets | — | {likeness['copy_rate_pct']:g} % |" in card
    assert f"| Tweets compared | {likeness['real']['tweets']} | {likeness['samples']} |" in card


def test_a_card_without_a_likeness_record_has_no_such_section() -> None:
    card = render_card(_pipeline_table(), _RECORD, model_ref="alice/doppeltweet")
    assert "How like them" not in card
    damaged = {**_RECORD, "likeness": {"real": [1, 2]}}
    assert "How like them" not in render_card(_pipeline_table(), damaged, model_ref="x")


def test_a_budgeted_run_says_its_epochs_were_a_cap_within_the_budget() -> None:
    record = {**_RECORD, "config": {**_RECORD["config"], "time_budget_s": 300.0}}
    rows = _markdown_rows(render_card(_pipeline_table(), record, model_ref="alice/doppeltweet"))
    assert rows["Epochs"] == ["at most 4, within a 300-second time budget"]
    assert _markdown_rows(render_card(_pipeline_table(), _RECORD, model_ref="x/y"))["Epochs"] == [
        "4"
    ]


def test_trained_models_card_says_how_recognisable_the_model_is(tiny_model_dir: Path) -> None:
    import json

    record = json.loads((tiny_model_dir / "training.json").read_text(encoding="utf-8"))
    figure = record["likeness"]["recognisability"]
    assert figure["generated"] == record["likeness"]["samples"]
    assert figure["held_out"] == record["likeness"]["real"]["tweets"]
    assert figure["panel"] == ["BarackObama", "Goethe", "realDonaldTrump"]
    assert 0.0 <= figure["generated_pct"] <= 100.0 and 0.0 <= figure["held_out_pct"] <= 100.0
    card = (tiny_model_dir / "README.md").read_text(encoding="utf-8")
    assert (
        "A classifier that knows @alice's real posts and those of 3 other public accounts picks "
        f"@alice for {figure['generated_pct']:g} % of this model's tweets (and for "
        f"{figure['held_out_pct']:g} % of @alice's own held-out posts)." in card
    )
    assert "@BarackObama, @Goethe, @realDonaldTrump" in card


def test_the_card_names_the_main_languages_and_warns_when_the_base_does_not_write_them() -> None:
    warning = "The base model gpt2 writes mostly English; tweets in Chinese will be poor."
    record = {**_RECORD, "languages": {"main": {"zh": 80.0, "en": 20.0}, "warning": warning}}
    card = render_card(_pipeline_table(), record, model_ref="x")
    front = yaml.safe_load(card.split("---")[1])
    assert front["language"] == ["zh", "en"]
    assert (
        "Main languages of the tweets (of those whose language could be told): Chinese 80 %, "
        "English 20 %." in card
    )
    assert card.count(warning) == 2
    plain = render_card(_pipeline_table(), _RECORD, model_ref="x")
    assert yaml.safe_load(plain.split("---")[1])["language"] == "en"
    assert "Main languages" not in plain
