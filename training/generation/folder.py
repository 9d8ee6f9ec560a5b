"""Reading a model folder: its training record, its dataset and its handles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError, ModelError
from training.generation.settings import DATASET_FILE, TRAINING_FILE

if TYPE_CHECKING:
    import torch


def read_training_record(model_dir: Path) -> dict[str, Any]:
    path = model_dir / TRAINING_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(
            f"The model in {model_dir} has an unreadable {TRAINING_FILE}; train it again."
        ) from error
    if not isinstance(record, dict):
        raise ModelError(
            f"The model in {model_dir} has a malformed {TRAINING_FILE}; train it again."
        )
    return record


def read_dataset(model_dir: Path) -> list[tuple[str, str]]:
    path = model_dir / DATASET_FILE
    if not path.is_file():
        raise ModelError(
            f"The model in {model_dir} has no {DATASET_FILE}, so its tweets cannot be checked for "
            "copies; train it again."
        )
    rows: list[tuple[str, str]] = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ValueError(f"line {number} has no text")
                rows.append((str(row.get("handle") or ""), row["text"]))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(
            f"The model in {model_dir} has a corrupt {DATASET_FILE}; train it again."
        ) from error
    return rows


def resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

    if device is None:
        from training.basemodels import pick_device

        return pick_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"Unknown device {device!r}: use cpu, cuda or mps.") from error


def model_handles(
    record: dict[str, Any], rows: list[tuple[str, str]], name: str
) -> tuple[str, ...]:
    recorded = record.get("handles")
    if isinstance(recorded, list) and recorded:
        values = [h.get("name") if isinstance(h, dict) else h for h in recorded]
        names = [str(v).lstrip("@").lower() for v in values if v]
        if names:
            return tuple(sorted(set(names)))
    from_rows = {h.lstrip("@").lower() for h, _ in rows if h}
    return tuple(sorted(from_rows)) if from_rows else tuple(name.split("-"))
