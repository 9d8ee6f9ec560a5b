"""``doppeltweet tweet``: handles and prompt in, numbered tweets or JSON out, one-line errors."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.cli import main
from training.commands.tweet import split_words
from training.errors import InputError
from training.generation import clear_generator_cache


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    """A fresh generator cache, one torch thread, and transformers' logging put back afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clear_generator_cache()
    with warnings.catch_warnings():
        yield
    clear_generator_cache()
    torch.set_num_threads(threads)
    hf_logging.set_verbosity(verbosity)
    if bars:
        hf_logging.enable_progress_bar()


@pytest.fixture
def store(tiny_model_dir: Path) -> Path:
    """The model store holding the session's tiny model ``alice``."""
    return tiny_model_dir.parent


def tweet(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``doppeltweet tweet ARGV --device cpu``; (exit code, stdout, stderr)."""
    code = main(["tweet", *argv, "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_split_words_takes_handles_first_and_the_prompt_last() -> None:
    assert split_words(["@alice"]) == (["@alice"], None)
    assert split_words(["alice", "@bob", "My dream is"]) == (["alice", "@bob"], "My dream is")
    assert split_words(["@alice", "bluesky:bob.bsky.social"]) == (
        ["@alice", "bluesky:bob.bsky.social"],
        None,
    )
    with pytest.raises(InputError, match="prompt last"):
        split_words(["@alice", "hello there", "@bob"])


def test_tweets_are_printed_numbered_with_the_rejection_count(capsys, store: Path) -> None:
    code, out, _ = tweet(capsys, "@alice", "-n", "2", "--seed", "3", "--models-dir", str(store))
    lines = out.splitlines()
    assert code == 0
    # No prompt: the model opens each tweet itself.
    assert lines[0].startswith("1. ") and len(lines[0]) > 3
    assert lines[1].startswith("2. ") and len(lines[1]) > 3
    assert lines[2].endswith("rejected.") or "rejected (" in lines[2]
    assert "candidates sampled" in lines[2]
    assert len(lines) == 3


def test_json_output_has_the_model_prompt_tweets_and_counts(capsys, store: Path) -> None:
    argv = ["@Alice", "Coffee first", "-n", "3", "--seed", "5", "--json", "--models-dir"]
    code, out, _ = tweet(capsys, *argv, str(store))
    data = json.loads(out)
    assert code == 0
    assert {"model", "prompt", "tweets", "candidates", "rejected"} <= set(data)
    assert data["model"] == "alice"
    assert data["prompt"] == "Coffee first"
    assert len(data["tweets"]) == 3
    assert all(t.startswith("Coffee first") and len(t) <= 280 for t in data["tweets"])
    assert data["candidates"] >= 3  # on CPU the first round samples only the 3 asked for
    assert data["rejected"] == sum(data["rejected_reasons"].values())


def test_the_same_seed_prints_the_same_tweets(capsys, store: Path) -> None:
    argv = ["@alice", "-n", "2", "--seed", "11", "--json", "--models-dir", str(store)]
    first = tweet(capsys, *argv)[1]
    clear_generator_cache()
    assert tweet(capsys, *argv)[1] == first


def test_several_handles_name_their_shared_model(
    capsys, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "alice-bob")
    record = json.loads((folder / "training.json").read_text())
    (folder / "training.json").write_text(json.dumps(record | {"name": "alice-bob"}))
    code, out, _ = tweet(capsys, "bob", "@alice", "--json", "--models-dir", str(tmp_path))
    assert code == 0
    assert json.loads(out)["model"] == "alice-bob"


def test_an_unknown_model_lists_the_known_ones(capsys, store: Path) -> None:
    code, out, err = tweet(capsys, "@bob", "--models-dir", str(store))
    assert code == 2
    assert out == ""
    assert "bob" in err and "alice" in err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_an_empty_prompt_lets_the_model_open_and_an_overlong_one_is_refused(
    capsys, store: Path
) -> None:
    code, out, _ = tweet(capsys, "@alice", "  ", "-n", "1", "--models-dir", str(store))
    assert code == 0 and out.startswith("1. ")
    code, _, err = tweet(capsys, "@alice", "word " * 50, "--models-dir", str(store))
    assert code == 2 and "200" in err


def test_a_bad_count_or_handle_is_refused(capsys, store: Path) -> None:
    code, _, err = tweet(capsys, "@alice", "-n", "0", "--models-dir", str(store))
    assert code == 2 and "1 to 20" in err
    code, _, err = tweet(capsys, "@not a handle!", "--models-dir", str(store))
    assert code == 2 and "handle" in err


def test_a_bad_prompt_fails_before_the_model_is_loaded(
    capsys, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "alice")
    (folder / "model.safetensors").write_bytes(b"damaged")
    code, _, err = tweet(capsys, "@alice", "word " * 50, "--models-dir", str(tmp_path))
    assert code == 2 and "200" in err
    code, _, err = tweet(capsys, "@alice", "--models-dir", str(tmp_path))
    assert code == 1 and "weights" in err
