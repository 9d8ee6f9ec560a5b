"""benchmarks/bench_quality.py: its text metrics on constructed tweets, and one tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_quality
from benchmarks.bench_quality import is_glued, markdown_table, opening_words, pct, vocabulary

REAL = [
    "Today's the day: go vote!",
    "Today we celebrate the nerds of the world",
    "The Nerd's guide to voting is out",
    "The future is bright",
    "@jake The best is yet to come",
    "Thanks to every volunteer",
]


def test_opening_words_are_the_persons_most_common_capitalised_first_words() -> None:
    assert opening_words(REAL, 2) == ["The", "Today"]
    # Replies and non-words never become prompts.
    assert "@jake" not in opening_words(REAL, 10)
    assert opening_words(["hello there", "#tbt friends", "123 go"], 3) == []


def test_a_prompt_glued_to_the_next_word_is_caught_and_a_real_word_is_not() -> None:
    words = vocabulary(REAL)
    assert is_glued("The", "TheNerd's guide to voting", words)
    assert is_glued("Today", "Today@jake is the day", words)
    assert not is_glued("Today", "Today's the day", words)  # a word the person wrote
    assert not is_glued("Today", "Today, we vote", words)  # the prompt with punctuation
    assert not is_glued("The", "The future", words)


def test_vocabulary_ignores_case_and_edge_punctuation() -> None:
    words = vocabulary(['"Vote!" (today)'])
    assert words == frozenset({"vote", "today"})


def test_percentages_round_to_one_decimal_and_survive_nothing() -> None:
    assert pct(1, 3) == 33.3
    assert pct(0, 0) == 0.0


def _run(**overrides: object) -> dict:
    run = {
        "recipe": "r",
        "archive": "alice",
        "wall_minutes": 1.5,
        "cpu_minutes": 2.9,
        "steps": 80,
        "perplexity_before": 40.1,
        "perplexity_after": 20.2,
        "tweet_perplexity_before": 45.3,
        "tweet_perplexity_after": 18.4,
        "style_gap": 7.5,
        "style_real": {"lowercase_pct": 1.0, "replies_pct": 2.0, "languages": {"en": 99.0}},
        "style_generated": {"lowercase_pct": 3.0, "replies_pct": 0.0, "languages": {"en": 90.0}},
        "copy_rate_pct": 0.0,
        "glued_prompts_pct": 12.5,
        "broken_emoji_pct": 0.0,
    }
    run.update(overrides)
    return run


def test_the_markdown_table_has_one_row_per_run_with_matching_columns() -> None:
    old = _run(recipe="s", archive="bob", tweet_perplexity_before=None)
    del old["tweet_perplexity_after"]  # a run from before the aligned perplexity was measured
    table = markdown_table([_run(), old])
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert {line.count("|") for line in lines} == {15}
    assert "| r | @alice | 1.5 | 2.9 | 80 | 40.1 → 20.2 | 45.3 → 18.4 | 7.5 |" in lines[2]
    assert "en 90 %" in lines[2] and "12.5 %" in lines[2]
    assert "| s | @bob | 1.5 | 2.9 | 80 | 40.1 → 20.2 | — | 7.5 |" in lines[3]


def test_an_unknown_recipe_is_refused_in_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_quality.main(["--quick", "--recipes", "nope"])
    assert "unknown recipe(s): nope" in capsys.readouterr().err


def test_quick_run_trains_the_tiny_model_and_reports_every_measure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "quality.json"
    code = bench_quality.main(
        [
            "--quick",
            "--recipes",
            "tiny-lora-es",
            "--workdir",
            str(tmp_path / "work"),
            "--models-dir",
            str(tmp_path / "models"),
            "--output",
            str(output),
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(output.read_text("utf-8"))
    assert printed["runs"] == saved["runs"] and len(saved["runs"]) == 1
    run = saved["runs"][0]
    assert run["recipe"] == "tiny-lora-es" and run["archive"] == "BarackObama"
    assert run["cpu_minutes"] > 0 and run["wall_minutes"] > 0
    assert run["perplexity_after"] < run["perplexity_before"]
    assert run["tweet_perplexity_after"] < run["tweet_perplexity_before"]
    assert run["config"]["lora_targets"] == "all-linear"
    assert run["config"]["early_stopping_patience"] == 1
    assert run["style_real"]["tweets"] > 0 and run["style_generated"]["tweets"] > 0
    assert 0 <= run["glued_prompts_pct"] <= 100 and run["prompted_tweets"] == 2
    assert run["broken_emoji_pct"] == 0.0  # generation drops broken emoji
    assert isinstance(run["style_gap"], float) and isinstance(run["copy_rate_pct"], float)
    assert saved["table"].count("\n") == 3


def test_every_quality_per_minute_variant_is_the_baseline_with_one_valid_change() -> None:
    from training.train import TrainConfig

    baseline = bench_quality.PER_MINUTE_BASELINE.settings
    assert bench_quality.PER_MINUTE_BASELINE.name == "lora-all-80-lr2e-3"
    for recipe in bench_quality.PER_MINUTE_RECIPES:
        TrainConfig(**recipe.settings).validate()
        changed = {k for k, v in recipe.settings.items() if baseline.get(k) != v}
        assert len(changed) <= 2, recipe.name  # one technique (warm-up comes with its peak)
