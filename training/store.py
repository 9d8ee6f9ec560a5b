"""The model store: one folder per model under a root (``models/`` by default).

A model folder holds the weights (or a LoRA adapter), the tokenizer, the cleaned dataset, the data
table, ``training.json``, ``loss.png`` and the ``README.md`` model card (docs/ARCHITECTURE.md).

Writes are atomic so a bot can keep serving a model while it is being retrained:

1. training writes into ``<root>/.staging-<name>-<random>/`` (an ``.owner`` file inside names the
   writing process, so a staging folder is only cleaned once its writer is dead);
2. :meth:`ModelStore.commit` moves the current ``<root>/<name>`` aside to
   ``<root>/.replaced-<name>-<random>/``, renames the staging folder to ``<root>/<name>`` and only
   then deletes the old folder.

A kill during step 1 leaves the old model untouched (the staging folder is cleaned later). The
only moment ``<root>/<name>`` is missing is between the two renames of step 2; if the process dies
exactly there, the next use of the store renames the old folder back. Folders starting with ``.``
are never models (they are staging areas, replaced models or converted base models).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from training.errors import InputError, ModelError

#: The training record every finished model folder has; a folder without it is not a model.
TRAINING_FILE = "training.json"
CARD_FILE = "README.md"
LOSS_PLOT_FILE = "loss.png"

_STAGING = ".staging-"
_REPLACED = ".replaced-"
_OWNER_FILE = ".owner"
# Model names come from handles (letters, digits, "_", "." and "-" for Bluesky, "-" or "+"
# between handles: training.handles.model_name).
_MODEL_NAME = re.compile(r"[a-z0-9_][a-z0-9_.+-]{0,199}")


@dataclass
class ModelInfo:
    """What a listing needs to know about a stored model (read from its ``training.json``)."""

    name: str
    path: Path
    handles: list[str]
    base_model: str
    lora: bool
    size_bytes: int
    created_at: datetime
    perplexity_before: float | None
    perplexity_after: float | None
    table: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``doppeltweet models --json``)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "handles": self.handles,
            "base_model": self.base_model,
            "lora": self.lora,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
            "perplexity_before": self.perplexity_before,
            "perplexity_after": self.perplexity_after,
            "table": self.table,
        }


@dataclass(frozen=True)
class DamagedModel:
    """A model folder that cannot be used, and the sentence saying why."""

    name: str
    path: Path
    problem: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``doppeltweet models --json`` lists it with ``"damaged": true``)."""
        return {"name": self.name, "path": str(self.path), "damaged": True, "problem": self.problem}


def check_model_name(name: str) -> str:
    """Refuse a model name that could escape the store or hide as a dot folder."""
    if not _MODEL_NAME.fullmatch(name) or ".." in name:
        raise InputError(
            f"{name[:40]!r} is not a model name: use the handles joined with '-', "
            "e.g. barackobama or alice-bob."
        )
    return name


class ModelStore:
    """One folder per model under ``root``, listed, fetched, deleted and replaced atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    # Reading -------------------------------------------------------------------------------------

    def list(self) -> list[ModelInfo]:
        """Every complete model, sorted by name; damaged folders are in :meth:`damaged`.

        Listing also tidies the store: a model whose replacement died mid-rename is put back,
        and staging folders whose training process is dead (killed mid-run) are removed.
        """
        if not self.root.is_dir():
            return []
        self.clean_stale()
        infos = []
        for folder in self._model_folders():
            with contextlib.suppress(ModelError):
                infos.append(read_model_info(folder))
        return infos

    def damaged(self) -> list[DamagedModel]:
        """Model folders that cannot be used: ``training.json`` missing or unreadable."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self._model_folders():
            try:
                read_model_info(folder)
            except ModelError as error:
                found.append(DamagedModel(folder.name, folder, str(error)))
        return found

    def _model_folders(self) -> list[Path]:
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        return [
            folder
            for folder in entries
            if not folder.name.startswith(".")
            and _MODEL_NAME.fullmatch(folder.name)
            and folder.is_dir()
        ]

    def names(self) -> list[str]:
        """The names of every complete model."""
        return [info.name for info in self.list()]

    def path(self, name: str) -> Path:
        """The folder a model of this name lives (or would live) in."""
        return self.root / check_model_name(name)

    def get(self, name: str) -> ModelInfo:
        """The model called ``name`` (``@`` and case ignored); unknown → the known names listed."""
        name = name.strip().removeprefix("@").lower()
        folder = self.path(name)
        self.recover()
        if not (folder / TRAINING_FILE).is_file():
            known = self.names()
            listing = ", ".join(known) if known else "none yet (train one with `doppeltweet train`)"
            # The model store's folder is not named: the bot relays this sentence.
            raise InputError(f"There is no model called {name!r}; known: {listing}.")
        return read_model_info(folder)

    def delete(self, name: str) -> None:
        """Remove a model; it vanishes from listings at once (renamed aside, then deleted)."""
        info = self.get(name)
        trash = self.root / f"{_REPLACED}{info.name}-{secrets.token_hex(4)}-deleted"
        os.replace(info.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # Writing -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh staging folder for ``name``; removed again if the block raises.

        The caller fills it and calls :meth:`commit`; until then the previous model is untouched.
        """
        check_model_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_stale()
        folder = self.root / f"{_STAGING}{name}-{secrets.token_hex(6)}"
        folder.mkdir()
        (folder / _OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
        try:
            yield folder
        finally:
            # After a commit the folder is gone; after an error or interrupt it is removed.
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)

    def commit(self, staged: Path, name: str) -> ModelInfo:
        """Make a complete staging folder the model ``name``, replacing any previous one."""
        target = self.path(name)
        if not (staged / TRAINING_FILE).is_file():
            raise ModelError(f"The new model for {name} is incomplete, so it was not installed.")
        (staged / _OWNER_FILE).unlink(missing_ok=True)
        aside = None
        if target.exists():
            aside = self.root / f"{_REPLACED}{name}-{secrets.token_hex(6)}"
            os.replace(target, aside)
        try:
            os.replace(staged, target)
        except BaseException:
            if aside is not None and not target.exists():
                os.replace(aside, target)
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        return read_model_info(target)

    # Housekeeping ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Put back a model whose replacement died between its two renames; drop finished ones."""
        if not self.root.is_dir():
            return
        for aside in self.root.glob(f"{_REPLACED}*"):
            if aside.name.endswith("-deleted"):
                shutil.rmtree(aside, ignore_errors=True)
                continue
            name = aside.name[len(_REPLACED) :].rsplit("-", 1)[0]
            target = self.root / name
            if not _MODEL_NAME.fullmatch(name):
                continue
            if target.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.replace(aside, target)

    def clean_stale(self) -> None:
        """Remove staging folders whose writing process is gone (killed mid-training)."""
        if not self.root.is_dir():
            return
        self.recover()
        for folder in self.root.glob(f"{_STAGING}*"):
            if not _owner_alive(folder):
                shutil.rmtree(folder, ignore_errors=True)


#: A staging folder is written its ``.owner`` file right after it is made; one this young
#: without it may be between the two steps, so it is left alone.
_OWNERLESS_GRACE_S = 60.0


def _owner_alive(folder: Path) -> bool:
    try:
        pid = int((folder / _OWNER_FILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        try:
            age = time.time() - folder.stat().st_mtime
        except OSError:
            return False
        return age < _OWNERLESS_GRACE_S
    return pid == os.getpid() or process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process; the bot's job runner asks this too."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state follows the parenthesised command name, which may itself contain ")".
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")


def read_model_info(folder: Path) -> ModelInfo:
    """Read a model folder's ``training.json`` into a :class:`ModelInfo`.

    Anything wrong with it (missing, not JSON, an array, fields of the wrong type, nested too
    deeply) is one :class:`ModelError` sentence naming the model, never its folder.
    """
    path = folder / TRAINING_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise TypeError("training.json is not an object")
        metrics = record.get("metrics", {})
        handles = record["handles"]
        table = record.get("data_table", {})
        if not isinstance(metrics, dict) or not isinstance(handles, list):
            raise TypeError("metrics or handles of the wrong type")
        if not isinstance(record["created_at"], str) or not isinstance(table, dict):
            raise TypeError("created_at or data_table of the wrong type")
        return ModelInfo(
            name=str(record["name"]),
            path=folder,
            handles=[str(h) for h in handles],
            base_model=str(record["base_model"]),
            lora=bool(record.get("lora", False)),
            size_bytes=_folder_size(folder),
            created_at=datetime.fromisoformat(record["created_at"]),
            # huggingtweets' fixed cuts, else (a time-budgeted run) the tweet-aligned blocks.
            perplexity_before=_number(
                _first_measured(metrics, "perplexity_before", "tweet_perplexity_before")
            ),
            perplexity_after=_number(
                _first_measured(metrics, "perplexity_after", "tweet_perplexity_after")
            ),
            table=table,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ModelError(
            # The name, not the path: the bot relays this sentence to Discord users.
            f"The model {folder.name} has a missing or damaged {TRAINING_FILE}; retrain it."
        ) from error


def _first_measured(metrics: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` that ``metrics`` holds a value for (None: none)."""
    return next((metrics[key] for key in keys if metrics.get(key) is not None), None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# A Hub model repository: "owner/name".
_HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def check_hub_repo(repo_id: str) -> str:
    """Refuse a ``--push-to-hub`` target that is not ``owner/name``."""
    if not _HUB_REPO.fullmatch(repo_id) or ".." in repo_id:
        raise InputError(
            f"{repo_id[:60]!r} is not a Hugging Face repository id: use owner/name, "
            "e.g. alice/doppeltweet-barackobama."
        )
    return repo_id


def check_hub_token(token: str | None) -> str:
    """Refuse to push without a token, before any training time is spent."""
    if not token:
        raise InputError(
            "Pushing to the Hub needs a Hugging Face write token: set HF_TOKEN in the "
            "environment or in .env."
        )
    return token


def push_to_hub(folder: Path, repo_id: str, token: str | None) -> str:
    """Upload a model folder to the Hugging Face Hub (created if needed); returns its URL.

    The token is passed to ``huggingface_hub`` only; it never appears in a message.
    """
    check_hub_repo(repo_id)
    token = check_hub_token(token)
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"Upload {folder.name} trained with doppeltweet",
        )
    except Exception as error:  # any network or Hub failure; its text could echo request data
        status = getattr(getattr(error, "response", None), "status_code", None)
        why = f" (HTTP {status})" if status else ""
        raise ModelError(
            f"The model was saved locally but could not be pushed to {repo_id}{why}: check "
            "the repository id, that HF_TOKEN has write access, and your network."
        ) from None
    return f"https://huggingface.co/{repo_id}"
