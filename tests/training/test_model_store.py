"""The model store: listing, lookup, deletion, atomic replacement and the Hub upload path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from training.errors import InputError, ModelError
from training.store import TRAINING_FILE, ModelStore, push_to_hub


def _record(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "handles": name.split("-"),
        "base_model": "tiny",
        "lora": False,
        "created_at": "2026-11-25T12:00:00+00:00",
        "metrics": {"perplexity_before": 300.0, "perplexity_after": 90.0},
        "data_table": {h: {"tweets_downloaded": 3} for h in name.split("-")},
        **extra,
    }


def _fake_model(folder: Path, name: str, marker: str = "v1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRAINING_FILE).write_text(json.dumps(_record(name)), encoding="utf-8")
    (folder / "weights.bin").write_text(marker, encoding="utf-8")
    return folder


def test_list_shows_complete_models_and_skips_dot_and_incomplete_folders(tmp_path: Path) -> None:
    _fake_model(tmp_path / "alice", "alice")
    _fake_model(tmp_path / "bob-carol", "bob-carol")
    _fake_model(tmp_path / ".bases" / "smollm2-135m", "smollm2-135m")
    _fake_model(tmp_path / ".staging-dave-1234", "dave")
    (tmp_path / "half-written").mkdir()

    infos = ModelStore(tmp_path).list()

    assert [info.name for info in infos] == ["alice", "bob-carol"]
    assert infos[1].handles == ["bob", "carol"]
    assert infos[0].perplexity_after == 90.0
    assert infos[0].size_bytes > 0


def test_list_of_a_missing_store_is_empty(tmp_path: Path) -> None:
    assert ModelStore(tmp_path / "nothing-here").list() == []


def test_get_unknown_model_lists_the_known_names(tmp_path: Path) -> None:
    _fake_model(tmp_path / "alice", "alice")
    with pytest.raises(InputError, match=r"no model called 'bob'.*known: alice\.$"):
        ModelStore(tmp_path).get("@bob")


def test_get_accepts_an_at_sign_and_capitals(tmp_path: Path) -> None:
    _fake_model(tmp_path / "alice", "alice")
    assert ModelStore(tmp_path).get("@Alice").name == "alice"


@pytest.mark.parametrize("name", ["../etc", ".bases", "a/b", "", "x" * 300, "al ice"])
def test_names_that_could_escape_the_store_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="is not a model name"):
        ModelStore(tmp_path).path(name)


def test_delete_removes_the_model(tmp_path: Path) -> None:
    _fake_model(tmp_path / "alice", "alice")
    store = ModelStore(tmp_path)
    store.delete("alice")
    assert store.list() == []
    assert not any(tmp_path.iterdir())


def test_commit_replaces_the_previous_model_only_when_complete(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _fake_model(tmp_path / "alice", "alice", marker="old")
    with store.staging("alice") as staged:
        assert staged.parent == tmp_path and staged.name.startswith(".staging-alice-")
        # Mid-write the old model is what everyone sees.
        assert (tmp_path / "alice" / "weights.bin").read_text() == "old"
        _fake_model(staged, "alice", marker="new")
        store.commit(staged, "alice")
    assert (tmp_path / "alice" / "weights.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice"]
    assert not (tmp_path / "alice" / ".owner").exists()


def test_a_failure_while_staging_keeps_the_old_model_and_removes_the_staging_folder(
    tmp_path: Path,
) -> None:
    store = ModelStore(tmp_path)
    _fake_model(tmp_path / "alice", "alice", marker="old")
    with pytest.raises(RuntimeError), store.staging("alice") as staged:
        (staged / "weights.bin").write_text("partial")
        raise RuntimeError("disk full")
    assert (tmp_path / "alice" / "weights.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice"]


def test_commit_refuses_an_incomplete_staging_folder(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _fake_model(tmp_path / "alice", "alice", marker="old")
    with pytest.raises(ModelError, match="incomplete"), store.staging("alice") as staged:
        (staged / "weights.bin").write_text("no training.json yet")
        store.commit(staged, "alice")
    assert (tmp_path / "alice" / "weights.bin").read_text() == "old"


def test_a_crash_between_the_two_renames_is_undone_on_next_use(tmp_path: Path) -> None:
    # The old model was moved aside, then the process died before the new one moved in.
    _fake_model(tmp_path / ".replaced-alice-0a1b2c3d4e5f", "alice", marker="old")
    infos = ModelStore(tmp_path).list()
    assert [info.name for info in infos] == ["alice"]
    assert (tmp_path / "alice" / "weights.bin").read_text() == "old"


def test_a_replaced_folder_left_after_a_finished_swap_is_deleted(tmp_path: Path) -> None:
    _fake_model(tmp_path / "alice", "alice", marker="new")
    _fake_model(tmp_path / ".replaced-alice-0a1b2c3d4e5f", "alice", marker="old")
    ModelStore(tmp_path).list()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice"]
    assert (tmp_path / "alice" / "weights.bin").read_text() == "new"


def test_stale_staging_folders_of_dead_processes_are_cleaned_but_live_ones_kept(
    tmp_path: Path,
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / ".staging-alice-dead"
    stale.mkdir()
    (stale / ".owner").write_text(dead.stdout.strip())
    live = tmp_path / ".staging-bob-live"
    live.mkdir()
    (live / ".owner").write_text(str(os.getppid()))

    with ModelStore(tmp_path).staging("carol"):
        pass

    assert not stale.exists()
    assert live.exists()


def test_push_to_hub_without_a_token_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^Pushing to the Hub needs .*HF_TOKEN.*\.$"):
        push_to_hub(tmp_path, "alice/doppeltweet-alice", None)


@pytest.mark.parametrize("repo", ["alice", "../x/y", "a/b/c", "alice/", "al ice/x"])
def test_push_to_hub_refuses_a_malformed_repo_id(tmp_path: Path, repo: str) -> None:
    with pytest.raises(InputError, match="not a Hugging Face repository id"):
        push_to_hub(tmp_path, repo, "hf_secret")


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(tmp_path: Path) -> None:
    with mock.patch("huggingface_hub.HfApi", autospec=True) as api_class:
        url = push_to_hub(tmp_path, "alice/doppeltweet-alice", "hf_secret")
    api_class.assert_called_once_with(token="hf_secret")
    api = api_class.return_value
    api.create_repo.assert_called_once_with(
        "alice/doppeltweet-alice", repo_type="model", exist_ok=True
    )
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == str(tmp_path)
    assert kwargs["repo_id"] == "alice/doppeltweet-alice"
    assert url == "https://huggingface.co/alice/doppeltweet-alice"


def test_a_failed_push_is_one_sentence_without_the_token(tmp_path: Path) -> None:
    with mock.patch("huggingface_hub.HfApi", autospec=True) as api_class:
        api_class.return_value.create_repo.side_effect = OSError("boom hf_secret")
        with pytest.raises(ModelError) as caught:
            push_to_hub(tmp_path, "alice/doppeltweet-alice", "hf_secret")
    message = str(caught.value)
    assert "hf_secret" not in message
    assert message.startswith("The model was saved locally but could not be pushed")
    assert caught.value.__cause__ is None


def test_a_damaged_record_is_one_sentence_naming_the_model_not_the_server_path(
    tmp_path: Path,
) -> None:
    _fake_model(tmp_path / "alice", "alice")
    (tmp_path / "alice" / TRAINING_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=r"^The model alice has a missing or damaged") as caught:
        ModelStore(tmp_path).get("alice")
    assert str(tmp_path) not in str(caught.value)
