"""The CLI against hostile files and faults: one sentence each, never a traceback.

Lone surrogates through ``data``, ``data --out`` and ``train``; damaged model folders through
``tweet`` and ``models``; a disk that fills up while saving; dead staging folders; model names
that must never collide.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import main
from training.config import get_settings
from training.handles import model_name, parse_handles
from training.store import TRAINING_FILE, ModelStore

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--base-model", "tiny", "--epochs", "1", "--block-size", "32", "--batch-size", "8"]


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _surrogate_jsonl(path: Path, count: int = 120) -> Path:
    """Posts as old exports left them: JSON escapes of half an emoji (lone surrogates)."""
    lines = []
    for number in range(count):
        text = (
            f"post {number} was cut inside an emoji by an old export tool, "
            f"and it talks about coffee and code and weather \\ud83d"
        )
        lines.append(f'{{"id": "{number}", "text": "{text}"}}')
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def test_data_and_data_out_survive_lone_surrogates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _surrogate_jsonl(tmp_path / "old.jsonl")
    out = tmp_path / "clean.jsonl"

    assert main(["data", "@alice", "--from", str(source), "--out", str(out)]) == 0

    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 120
    assert all("\ud83d" not in record["text"] for record in records)


def test_train_survives_lone_surrogates(tmp_path: Path) -> None:
    source = _surrogate_jsonl(tmp_path / "old.jsonl")
    models = tmp_path / "models"
    args = ["train", "@alice", "--from", str(source), *FAST, "--max-steps", "1"]
    code = main([*args, "--models-dir", str(models)])
    assert code == 0
    dataset = (models / "alice" / "dataset.jsonl").read_text(encoding="utf-8")
    assert "\\ud83d" not in dataset


# --------------------------------------------------------------------------- damaged models


def _damaged_store(tmp_path: Path, tiny_model_dir: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(tiny_model_dir, store / "alice")
    shutil.copytree(tiny_model_dir, store / "bob")
    (store / "bob" / TRAINING_FILE).write_text("[1, 2, 3]", encoding="utf-8")
    shutil.copytree(tiny_model_dir, store / "carol")
    (store / "carol" / TRAINING_FILE).write_bytes(b"\x00\xffgarbage{")
    shutil.copytree(tiny_model_dir, store / "dave")
    (store / "dave" / TRAINING_FILE).write_text("[" * 1_000_000, encoding="utf-8")
    shutil.copytree(tiny_model_dir, store / "erin")
    record = json.loads((store / "erin" / TRAINING_FILE).read_text(encoding="utf-8"))
    record["metrics"] = "not a mapping"
    (store / "erin" / TRAINING_FILE).write_text(json.dumps(record), encoding="utf-8")
    return store


@pytest.mark.parametrize("name", ["bob", "carol", "dave", "erin"])
def test_tweet_with_a_damaged_training_json_is_one_sentence(
    tmp_path: Path, tiny_model_dir: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _damaged_store(tmp_path, tiny_model_dir)

    code = main(["tweet", f"@{name}", "--models-dir", str(store)])

    err = capsys.readouterr().err
    assert code != 0
    assert err.strip().splitlines() == [
        f"error: The model {name} has a missing or damaged training.json; retrain it."
    ]
    assert str(store) not in err


def test_models_lists_damaged_folders_as_damaged(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _damaged_store(tmp_path, tiny_model_dir)

    assert main(["models", "--models-dir", str(store), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows if not row.get("damaged")] == ["alice"]
    assert sorted(row["name"] for row in rows if row.get("damaged")) == [
        "bob",
        "carol",
        "dave",
        "erin",
    ]

    assert main(["models", "--models-dir", str(store)]) == 0
    shown = capsys.readouterr().out
    for name in ("bob", "carol", "dave", "erin"):
        assert f"Damaged: The model {name} has a missing or damaged" in shown
    assert "alice" in shown


# --------------------------------------------------------------------------- staging folders


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_models_removes_staging_folders_of_dead_runs_only(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_model_dir, store / "alice")
    dead = store / ".staging-alice-deadbeef"
    shutil.copytree(tiny_model_dir, dead)
    (dead / ".owner").write_text(str(_dead_pid()), encoding="utf-8")
    live = store / ".staging-bob-cafe"
    live.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (live / ".owner").write_text(str(sleeper.pid), encoding="utf-8")
        just_made = store / ".staging-carol-0123"  # between mkdir and writing .owner
        just_made.mkdir()

        assert main(["models", "--models-dir", str(store)]) == 0

        assert not dead.exists()
        assert live.exists() and just_made.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    capsys.readouterr()


# --------------------------------------------------------------------------- disk full

_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from training.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_disk_that_fills_while_saving_is_one_sentence_and_keeps_the_old_model(
    tmp_path: Path, sample_csv: Path, tiny_model_dir: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_model_dir, store / "alice")
    old = (store / "alice" / TRAINING_FILE).read_bytes()
    weights = max(p.stat().st_size for p in tiny_model_dir.iterdir() if p.is_file())
    # Small files (the owner marker, logs) still fit; the weights do not.
    limit = weights // 2
    script = tmp_path / "limited.py"
    script.write_text(_LIMITED, encoding="utf-8")
    args = ["train", "@alice", "--from", str(sample_csv), *FAST, "--max-steps", "1"]
    args[args.index("tiny")] = str(tiny_model_dir)

    done = subprocess.run(
        [sys.executable, str(script), str(limit), *args, "--models-dir", str(store)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: The disk ran out of room while training alice")
    assert "previous model was kept" in last
    assert (store / "alice" / TRAINING_FILE).read_bytes() == old
    assert sorted(p.name for p in store.iterdir()) == ["alice"]  # staging removed


# --------------------------------------------------------------------------- model names


def _name(*texts: str) -> str:
    return model_name(parse_handles(texts))


def test_different_handle_sets_never_share_a_model_name() -> None:
    pair = _name("bluesky:alice.com", "bluesky:bob.com")
    assert pair != _name("bluesky:alice.com-bob.com")
    assert pair == "alice.com+bob.com"
    assert _name("@alice", "bluesky:bob.com") != _name("bluesky:alice-bob.com")
    # Existing names stay as they were: every single handle, and X handles joined with "-".
    assert _name("bluesky:alice.com-bob.com") == "alice.com-bob.com"
    assert _name("bluesky:alice.bsky.social") == "alice.bsky.social"
    assert _name("@BarackObama") == "barackobama"
    assert _name("@bob", "@alice") == "alice-bob"
    assert _name("@c", "@b", "@a") == "a-b-c"


def test_model_names_are_injective_over_tricky_sets() -> None:
    sets = [
        ("bluesky:alice.com", "bluesky:bob.com"),
        ("bluesky:alice.com-bob.com",),
        ("bluesky:a-b.com", "bluesky:c.com"),
        ("bluesky:a.com", "bluesky:b-c.com"),
        ("@a_", "@b", "bluesky:c.com"),
        ("@a", "bluesky:b-c.com"),
        ("bluesky:a.com--b.com",),
        ("bluesky:a.com", "bluesky:b.com", "bluesky:c-d.com"),
        ("bluesky:a.com", "bluesky:b.com-c-d.com"),
        ("@jack", "@bob"),
        ("bluesky:jack.bsky.social", "@bob"),
        ("@alice", "bluesky:bob.com"),
        ("bluesky:alice-bob.com",),
        ("@a", "@b"),
        ("bluesky:a-b.com",),
    ]
    names = [_name(*handles) for handles in sets]
    assert len(set(names)) == len(names), names
    store = ModelStore(Path("unused"))
    for name in names:
        store.path(name)  # every name is a valid folder name in the store


@pytest.mark.parametrize("damage", ["[" * 1_000_000, "\x00\x01 not json", "[1, 2]"])
def test_a_damaged_saved_data_table_is_one_sentence_naming_the_model_not_the_folder(
    tmp_path: Path, damage: str
) -> None:
    from training.cleaning import DataTable
    from training.errors import InputError

    folder = tmp_path / "models" / "alice"
    folder.mkdir(parents=True)
    (folder / "data_table.json").write_text(damage, encoding="utf-8")
    (folder / "dataset.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        DataTable.load(folder)
    assert str(caught.value).startswith("alice/data_table.json is not a")
    assert str(tmp_path) not in str(caught.value)
