"""``doppeltweet train`` and ``doppeltweet models`` end to end, including being killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from training.cli import main
from training.config import get_settings
from training.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]
PHASE_ORDER = ["fetching", "cleaning", "loading", "evaluating", "training", "saving", "done"]
FAST = ["--base-model", "tiny", "--epochs", "1", "--block-size", "32", "--batch-size", "8"]


@pytest.fixture(autouse=True)
def _no_hub_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_TOKEN", "DOPPELTWEET_HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_progress_json_is_one_object_per_line_in_phase_order_ending_with_done(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "@alice",
            "--from",
            str(sample_csv),
            *FAST,
            "--max-steps",
            "3",
            "--models-dir",
            str(tmp_path),
            "--progress-json",
        ]
    )
    out = capsys.readouterr().out
    events = _events(out)  # every stdout line parses
    assert code == 0
    phases = [event["phase"] for event in events]
    firsts = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert [p for p in PHASE_ORDER if p in firsts] == PHASE_ORDER
    assert firsts == [
        "fetching",
        "cleaning",
        "loading",
        "evaluating",
        "training",
        "evaluating",
        "saving",
        "done",
    ]
    steps = [e for e in events if e["phase"] == "training" and e["step"] is not None]
    assert steps[-1]["step"] == steps[-1]["total"] == 3
    assert all(e["loss"] > 0 and e["tokens_per_s"] > 0 for e in steps)
    done = events[-1]
    assert done["model"] == "alice" and Path(done["path"]) == tmp_path / "alice"
    assert done["perplexity_after"] < done["perplexity_before"]
    assert (tmp_path / "alice" / "README.md").is_file()


def test_terminal_mode_prints_the_table_and_where_the_model_and_card_are(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "alice",
            "--from",
            str(sample_csv),
            *FAST,
            "--max-steps",
            "2",
            "--models-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Tweets downloaded" in out and "330" in out  # 300 kept + 20 RTs + 10 short
    assert f"Model alice saved in {tmp_path / 'alice'}" in out
    assert f"Model card: {tmp_path / 'alice' / 'README.md'}" in out


def test_name_stores_the_model_under_that_name_instead_of_the_handles(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "alice", "--from", str(sample_csv), *FAST, "--max-steps", "1"]
    code = main([*argv, "--name", "alice+discord", "--models-dir", str(tmp_path)])
    assert code == 0
    [info] = ModelStore(tmp_path).list()
    assert info.name == "alice+discord" and info.path == tmp_path / "alice+discord"
    assert not (tmp_path / "alice").exists()
    capsys.readouterr()
    assert main([*argv, "--name", "../escape", "--models-dir", str(tmp_path)]) == 2
    assert "is not a model name" in capsys.readouterr().err
    assert [i.name for i in ModelStore(tmp_path).list()] == ["alice+discord"]


def test_too_little_data_shows_the_table_and_ends_with_an_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "few.csv"
    csv.write_text("text\n" + "".join(f"a short but real tweet {i}\n" for i in range(20)))
    code = main(
        [
            "train",
            "@alice",
            "--from",
            str(csv),
            *FAST,
            "--models-dir",
            str(tmp_path / "m"),
            "--progress-json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    events = _events(captured.out)
    assert events[-1]["phase"] == "error"
    assert "at least 6,000" in events[-1]["message"]
    # What was read travels with the refusal, for the bot to show beside the sentence.
    chars = sum(len(f"a short but real tweet {i}") for i in range(20))
    assert events[-1]["table"] == {
        "alice": {
            "tweets_downloaded": 20,
            "retweets": 0,
            "short_tweets": 0,
            "tweets_kept": 20,
            "chars_kept": chars,
        }
    }
    assert "Tweets kept" in captured.err  # the table, on stderr in JSON mode
    assert not (tmp_path / "m").exists() or ModelStore(tmp_path / "m").list() == []


def test_unknown_base_model_is_one_sentence(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "@alice",
            "--from",
            str(sample_csv),
            "--base-model",
            "no such model",
            "--models-dir",
            str(tmp_path),
            "--progress-json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    message = _events(captured.out)[-1]["message"]
    assert message.startswith("Unknown base model 'no such model'")
    assert "tiny, smollm2-135m" in message
    assert "error: Unknown base model" in captured.err
    assert ModelStore(tmp_path).list() == []


def test_push_to_hub_without_a_token_fails_before_any_work(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "@alice",
            "--from",
            str(sample_csv),
            *FAST,
            "--models-dir",
            str(tmp_path),
            "--push-to-hub",
            "alice/doppeltweet-alice",
            "--progress-json",
        ]
    )
    events = _events(capsys.readouterr().out)
    assert code == 2
    assert [e["phase"] for e in events] == ["error"]
    assert "HF_TOKEN" in events[0]["message"]


def test_push_to_hub_uploads_the_new_model_folder_and_never_prints_the_token(
    tmp_path: Path,
    sample_csv: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_print_me")
    get_settings.cache_clear()
    with mock.patch("huggingface_hub.HfApi", autospec=True) as api_class:
        code = main(
            [
                "train",
                "@alice",
                "--from",
                str(sample_csv),
                *FAST,
                "--max-steps",
                "1",
                "--models-dir",
                str(tmp_path),
                "--push-to-hub",
                "alice/dt",
                "--progress-json",
            ]
        )
    captured = capsys.readouterr()
    assert code == 0
    api_class.assert_called_once_with(token="hf_do_not_print_me")
    upload = api_class.return_value.upload_folder.call_args.kwargs
    assert upload["folder_path"] == str(tmp_path / "alice") and upload["repo_id"] == "alice/dt"
    assert _events(captured.out)[-1]["hub_url"] == "https://huggingface.co/alice/dt"
    assert "model='alice/dt'" in (tmp_path / "alice" / "README.md").read_text()
    assert "hf_do_not_print_me" not in captured.out + captured.err


def _start_long_training(store: Path, csv: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            "@alice",
            "--from",
            str(csv),
            "--base-model",
            "tiny",
            "--epochs",
            "300",
            "--block-size",
            "32",
            "--batch-size",
            "2",
            "--models-dir",
            str(store),
            "--progress-json",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_for_training_steps(process: subprocess.Popen[str]) -> list[dict]:
    events = []
    assert process.stdout is not None
    for line in process.stdout:  # bounded: the run has thousands of steps and we stop at one
        events.append(json.loads(line))
        if events[-1]["phase"] == "training" and events[-1]["step"] is not None:
            return events
    pytest.fail(f"training ended before its first step: {events}")


def _old_model(store: Path, tiny_model_dir: Path) -> bytes:
    shutil.copytree(tiny_model_dir, store / "alice")
    return (store / "alice" / "training.json").read_bytes()


def test_sigterm_stops_cleanly_keeps_the_old_model_and_ends_with_an_error_line(
    tmp_path: Path, sample_csv: Path, tiny_model_dir: Path
) -> None:
    old = _old_model(tmp_path, tiny_model_dir)
    process = _start_long_training(tmp_path, sample_csv)
    try:
        _wait_for_training_steps(process)
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode != 0
    last = _events(rest)[-1]
    assert last["phase"] == "error"
    assert "SIGTERM" in last["message"] and "previous model was kept" in last["message"]
    assert (tmp_path / "alice" / "training.json").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice"]  # nothing half-written left


def test_sigkill_mid_training_leaves_the_old_model_intact_and_serving(
    tmp_path: Path, sample_csv: Path, tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    old = _old_model(tmp_path, tiny_model_dir)
    process = _start_long_training(tmp_path, sample_csv)
    try:
        _wait_for_training_steps(process)
        process.kill()
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert (tmp_path / "alice" / "training.json").read_bytes() == old
    # The dead run's staging folder is left until the store is next used...
    assert any(p.name.startswith(".staging-alice-") for p in tmp_path.iterdir())
    store = ModelStore(tmp_path)
    assert [info.name for info in store.list()] == ["alice"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "alice")  # still loads
    # ...and listing (`doppeltweet models`) removed it, its owner being dead.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice"]


def test_models_lists_name_handles_base_size_date_and_perplexity(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tiny_model_dir.parent
    assert main(["models", "--models-dir", str(store), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listing] == ["alice"]
    model = listing[0]
    assert model["handles"] == ["alice"] and model["base_model"] == "tiny"
    assert model["size_bytes"] > 0 and model["created_at"]
    assert model["perplexity_after"] < model["perplexity_before"]

    assert main(["models", "--models-dir", str(store)]) == 0
    text = capsys.readouterr().out
    for expected in ("alice", "@alice", "tiny", "MB", "→"):
        assert expected in text


def test_models_on_an_empty_store_says_how_to_train_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    assert "doppeltweet train" in capsys.readouterr().out


def test_each_from_file_trains_the_handle_typed_in_the_same_position(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # @zed is typed first but sorts last: its file must still be read for @zed, not @alice.
    zed_csv = tmp_path / "zed.csv"
    lines = ["text"] + [f"zed says {i} words about the sea today" for i in range(250)]
    zed_csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["train", "@zed", "@alice", "--from", str(zed_csv), "--from", str(sample_csv)]
    code = main([*args, *FAST, "--max-steps", "1", "--models-dir", str(tmp_path / "m")])
    capsys.readouterr()
    assert code == 0
    table = json.loads((tmp_path / "m" / "alice-zed" / "data_table.json").read_text())
    assert table["zed"] == {
        "tweets_downloaded": 250,
        "retweets": 0,
        "short_tweets": 0,
        "tweets_kept": 250,
    }
    assert table["alice"]["tweets_downloaded"] == 330


def test_a_missing_python_module_names_what_to_fix(
    tmp_path: Path,
    sample_csv: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose Python lacks a dependency: the sentence says which and what to set."""
    from training.commands import train

    def missing(*args: object) -> int:
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(train, "_run", missing)
    argv = ["train", "@alice", "--from", str(sample_csv), "--models-dir", str(tmp_path)]
    with pytest.raises(ModuleNotFoundError):
        main([*argv, "--progress-json"])
    assert _events(capsys.readouterr().out)[-1]["message"] == (
        "Training needs the Python module 'transformers', which the interpreter running it "
        "lacks; install doppeltweet there (for Ray Jobs, set DOPPELTWEET_RAY_PYTHON to an "
        "interpreter that has it)."
    )


def test_a_plain_train_runs_for_the_budget_setting_and_epochs_turn_it_off(
    tmp_path: Path, sample_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOPPELTWEET_TRAIN_BUDGET_S", "600")
    get_settings.cache_clear()
    common = ["--base-model", "tiny", "--block-size", "32", "--compare-samples", "0"]
    for name, extra in (("alice", []), ("bob", ["--epochs", "1", "--max-steps", "2"])):
        argv = ["train", f"@{name}", "--from", str(sample_csv), *common, *extra]
        assert main([*argv, "--models-dir", str(tmp_path), "--progress-json"]) == 0
    budgeted = json.loads((tmp_path / "alice" / "training.json").read_text())
    assert budgeted["config"]["time_budget_s"] == 600 and budgeted["config"]["epochs"] == 4
    assert budgeted["budget"]["seconds"] == 600
    capped = json.loads((tmp_path / "bob" / "training.json").read_text())
    assert capped["config"]["time_budget_s"] is None and "budget" not in capped


def test_a_negative_time_budget_is_one_sentence(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "@alice", "--from", str(sample_csv), *FAST, "--time-budget", "-5"]
    assert main([*argv, "--models-dir", str(tmp_path)]) != 0
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("error: --time-budget must be 0 (none) or more seconds, not -5.")
    )
    assert not (tmp_path / "alice").exists()


# --- other languages ---------------------------------------------------------------------------

_ZH_OPENINGS = ["今天", "昨天晚上", "这个周末", "刚才", "早上"]
_ZH_MIDDLES = [
    "我们去公园散步",
    "我读完了一本新书",
    "和朋友一起吃火锅",
    "在家里写代码",
    "看了一场电影",
]
_ZH_ENDINGS = ["，心情特别好。", "，感觉很放松！", "，真的很开心。", "，有点累但是值得。"]


def _chinese_csv(folder: Path) -> Path:
    rows = [
        f"{a}{b}{c}"
        for a in _ZH_OPENINGS
        for b in _ZH_MIDDLES
        for c in _ZH_ENDINGS
        for _ in range(4)
    ]
    rows += ["谢谢", "好的！", "@wang 哈哈"] * 5  # short replies
    path = folder / "li.csv"
    path.write_text("text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_a_chinese_archive_trains_on_the_base_set_for_chinese(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import basemodels

    # The configured base is an English one (tiny stands in for it: it loads offline).
    english_tiny = (basemodels.re.compile("english-tiny"), basemodels._ENGLISH)
    monkeypatch.setattr(basemodels, "KNOWN_BASES", (*basemodels.KNOWN_BASES, english_tiny))
    real_load = basemodels.load_base_model
    loaded: list[str] = []

    def load(name: str, **kwargs):
        loaded.append(name)
        return real_load("tiny" if name == "english-tiny" else name, **kwargs)

    monkeypatch.setattr(basemodels, "load_base_model", load)
    args = ["train", "@li", "--from", str(_chinese_csv(tmp_path)), *FAST, "--max-steps", "1"]
    args += ["--compare-samples", "4", "--models-dir", str(tmp_path / "m"), "--progress-json"]
    args += ["--base-model", "english-tiny", "--base-by-language", '{"zh": "tiny"}']
    assert main(args) == 0
    events = _events(capsys.readouterr().out)
    assert loaded == ["tiny"]
    assert any("training on tiny" in (e["message"] or "") for e in events)
    assert not any("notes" in e for e in events)  # tiny writes what it learns: no warning
    table = json.loads((tmp_path / "m" / "li" / "data_table.json").read_text())
    assert table["li"]["short_tweets"] == 15 and table["li"]["tweets_kept"] == 400
    record = json.loads((tmp_path / "m" / "li" / "training.json").read_text())
    assert record["base_model"] == "tiny"
    assert record["languages"]["main"] == {"zh": 100.0}
    assert record["languages"]["chosen_for"] == "zh"
    assert record["languages"]["configured_base"] == "english-tiny"
    card = (tmp_path / "m" / "li" / "README.md").read_text()
    assert "language: zh" in card and "Chinese 100 %" in card


def test_an_english_base_for_a_chinese_archive_is_noted_before_training_and_in_the_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import basemodels

    monkeypatch.setattr(
        basemodels, "KNOWN_BASES", ((basemodels.re.compile("tiny"), basemodels._ENGLISH),)
    )
    args = ["train", "@li", "--from", str(_chinese_csv(tmp_path)), *FAST, "--max-steps", "1"]
    args += ["--compare-samples", "4", "--models-dir", str(tmp_path / "m"), "--progress-json"]
    args += ["--base-by-language", '{"ja": "Qwen/Qwen2.5-0.5B"}']  # not this person's language
    assert main(args) == 0
    events = _events(capsys.readouterr().out)
    noted = next(i for i, e in enumerate(events) if "notes" in e)
    warning = events[noted]["message"]
    assert "writes mostly English; tweets in Chinese will be poor" in warning
    assert "Qwen/Qwen2.5-0.5B" in warning
    loading = next(i for i, e in enumerate(events) if e["phase"] == "loading")
    assert noted < loading  # said before training starts
    assert all(e["notes"] == [warning] for e in events[noted:])  # and kept in every later event
    record = json.loads((tmp_path / "m" / "li" / "training.json").read_text())
    assert record["languages"]["warning"] == warning
    assert record["languages"]["base_languages"] == ["en"]
    card = (tmp_path / "m" / "li" / "README.md").read_text()
    assert card.count(warning) == 2  # under the data table and in the limitations


def test_a_bad_base_by_language_is_one_sentence(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad, words in (
        ("[1]", "JSON object"),
        ('{"japanese": "x"}', "not a language code"),
        ('{"ja": 3}', "must be a model name"),
    ):
        args = ["train", "@alice", "--from", str(sample_csv), *FAST, "--progress-json"]
        code = main([*args, "--models-dir", str(tmp_path), "--base-by-language", bad])
        events = _events(capsys.readouterr().out)
        assert code != 0 and events[-1]["phase"] == "error"
        assert words in events[-1]["message"]
        assert not (tmp_path / "alice").exists()
