"""What every benchmark shares: the bundled data, the benchmark models, FLOP counting, RSS, JSON.

The benchmarks measure the project's real code paths (``training.train.train_model``,
``training.generation.TweetGenerator`` through ``bot.model_cache.ModelCache``,
``bot.jobs.JobRunner``) on the bundled FiveThirtyEight CSV, so the numbers describe what a user of
this machine gets.

The models:

* ``gpt2`` — ``GPT2Config()`` (GPT-2 124M's shape: 12 layers, 768 dims, 1024 positions, a
  50,257-token vocabulary) with random weights: the same FLOPs per token as the real ``gpt2``. The
  real GPT-2 tokenizer cannot be downloaded here, so it uses SmolLM2's byte-level BPE (49,152
  tokens, trained on general web text, so tweets split into about as many tokens as with GPT-2's);
  its ids all fit GPT-2's 50,257-row embedding.
* ``smollm2`` — the pretrained ``smollm2-135m`` built-in (converted once into ``<models>/.bases``).
* ``tiny`` — the 2-layer test model (``training.basemodels.build_tiny_model``).

In ``quick`` mode (the smoke test) ``gpt2`` shrinks to 2 layers of 64 dims with the tiny tokenizer,
so each script runs in seconds and still exercises every path.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_CSV = ROOT / "examples" / "BarackObama.csv"
HANDLE = "BarackObama"
GPT2_NAME = "gpt2"
SMOLLM2_NAME = "smollm2-135m"
TINY_NAME = "tiny"


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="minimal mode: tiny shapes and few steps (seconds; for the smoke test)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for benchmark models, reused between scripts (default: a temporary one)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="model store whose .bases/ holds the converted smollm2-135m (default: "
        "DOPPELTWEET_MODELS_DIR or models/)",
    )
    return parser


def emit(result: dict[str, Any]) -> None:
    """Print one JSON object on stdout: the only thing a benchmark writes there."""
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=False, default=_jsonable) + "\n")
    sys.stdout.flush()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Replace ``path`` only with a complete JSON file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send library prints (e.g. the Trainer's metrics dict) to stderr while a benchmark runs."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def quiet_libraries() -> None:
    """Keep library chatter off stdout (the JSON) and warnings out of the way."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)
    warnings.filterwarnings("ignore")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def workdir(path: Path | None) -> Iterator[Path]:
    """``path`` (created), or a temporary folder removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="doppeltweet-bench-") as tmp:
        yield Path(tmp)


def models_dir(arg: Path | None) -> Path:
    """The user's model store (only its ``.bases`` is used, to reuse the converted SmolLM2)."""
    if arg is not None:
        return arg.resolve()
    from training.config import TrainingSettings

    return Path(TrainingSettings(_env_file=None).models_dir).resolve()


# Data ------------------------------------------------------------------------------------------


def load_table(limit: int | None = None) -> Any:
    """The bundled CSV through the real pipeline (decoding, mojibake repair, cleaning)."""
    from training.cleaning import DataTable, clean_handle
    from training.handles import parse_handle
    from training.sources.tabular import TabularSource

    handle = parse_handle(HANDLE)
    tweets = TabularSource(DATA_CSV, max_file_bytes=64 * 1024 * 1024).fetch(handle)
    if limit is not None:
        tweets = tweets[:limit]
    return DataTable([clean_handle(handle, tweets)])


def renamed_table(table: Any, name: str) -> Any:
    """The same tweets under another handle (another model name in the same store)."""
    from training.cleaning import DataTable, HandleData
    from training.handles import parse_handle

    data = table.handles[0]
    return DataTable(
        [
            HandleData(
                parse_handle(name),
                data.tweets_downloaded,
                data.retweets,
                data.short_tweets,
                list(data.kept),
            )
        ]
    )


# Models ----------------------------------------------------------------------------------------


def link_bases(store_root: Path, models: Path) -> None:
    """Let a scratch model store see the user's converted bases (no second GGUF conversion)."""
    from training.basemodels import BASES_DIR

    store_root.mkdir(parents=True, exist_ok=True)
    link = store_root / BASES_DIR
    source = models / BASES_DIR
    source.mkdir(parents=True, exist_ok=True)
    if not link.exists() and not link.is_symlink():
        link.symlink_to(source, target_is_directory=True)


def ensure_smollm2_base(models: Path) -> Path:
    """The converted SmolLM2 folder (converting the GGUF the first time, ~1 minute)."""
    from training.basemodels import ensure_smollm2

    return ensure_smollm2(models)


def gpt2_base(root: Path, models: Path, texts: Sequence[str], *, quick: bool) -> Path:
    """A random-init GPT-2-124M-shaped base folder (see the module docstring), built once."""
    folder = root / ("gpt2-quick-base" if quick else "gpt2-124m-base")
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from training.basemodels import build_tiny_model

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if quick:
        build_tiny_model(texts, tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=2
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(ensure_smollm2_base(models))
        tokenizer.model_max_length = 1024
        tokenizer.save_pretrained(tmp)
        config = GPT2Config()  # GPT-2 124M: vocab 50257, 1024 positions, 12 x 768
    eos = int(tokenizer.eos_token_id)
    config.bos_token_id = config.eos_token_id = config.pad_token_id = eos
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp)
    if folder.exists():  # another benchmark process built it first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, folder)
    return folder


class StepClock:
    """A ``ProgressReporter`` that timestamps the training steps it is told about."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []
        self.phases: list[tuple[str, float]] = []

    def phase(self, name: str, message: str | None = None) -> None:
        self.phases.append((name, time.perf_counter()))

    def step(
        self,
        step: int,
        total: int,
        loss: float | None,
        tokens_per_s: float | None,
        eta_s: float | None,
    ) -> None:
        self.steps.append((step, time.perf_counter()))

    def note(self, message: str) -> None:
        """Nothing to record."""

    def done(self, **fields: Any) -> None:
        """Nothing to record."""

    def error(self, message: str) -> None:
        """Nothing to record."""

    def steady_rate(self, tokens_per_step: int) -> tuple[float, int, float]:
        """(tokens/s, steps, seconds) between the first and the last reported step.

        The first step is left out: it pays for lazy initialisation (optimizer state, allocator
        growth), which a real run amortises over hundreds of steps.
        """
        if len(self.steps) < 2:
            raise RuntimeError("fewer than two training steps were reported")
        (s0, t0), (s1, t1) = self.steps[0], self.steps[-1]
        steps = s1 - s0
        return steps * tokens_per_step / (t1 - t0), steps, t1 - t0


@dataclass(frozen=True)
class TrainedModel:
    """A model folder made by the real trainer for the generation and memory benchmarks."""

    path: Path
    base: str
    lora: bool


#: ``make demo``'s training shape (scripts/demo.sh): steps of 4 blocks of 64 tokens, 80 of them.
DEMO_BLOCK_SIZE = 64
DEMO_BATCH_SIZE = 4
DEMO_STEPS = 80


def train_folder(
    store_root: Path,
    table: Any,
    base_model: str,
    *,
    lora: bool,
    max_steps: int,
    block_size: int,
    batch_size: int = 1,
    reporter: Any | None = None,
) -> Path:
    """Train through ``training.train.train_model`` (no validation split) and return the folder.

    In fp32 whatever the CPU: the throughput and MFU figures are against the fp32 matmul
    ceiling, and earlier results were taken in fp32."""
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    config = TrainConfig(
        base_model=base_model,
        lora=lora,
        epochs=1,
        block_size=block_size,
        batch_size=batch_size,
        max_steps=max_steps,
        val_fraction=0.0,
        precision="fp32",
    )
    info = train_model(table, config, ModelStore(store_root), reporter or StepClock())
    return Path(info.path)


def ready_folder(
    store_root: Path,
    table: Any,
    name: str,
    base_model: str,
    *,
    lora: bool,
    max_steps: int,
    block_size: int,
    batch_size: int = 1,
) -> Path:
    """The model folder ``name`` in ``store_root``, trained once and then reused."""
    from training.store import ModelStore

    path = ModelStore(store_root).path(name)
    if (path / "training.json").is_file():
        return path
    return train_folder(
        store_root,
        renamed_table(table, name),
        base_model,
        lora=lora,
        max_steps=max_steps,
        block_size=block_size,
        batch_size=batch_size,
    )


# Counting --------------------------------------------------------------------------------------


def matmul_params(model: Any) -> dict[str, int]:
    """Parameter counts, and N: the weights of every matrix multiply a token goes through.

    N counts the weight matrices of every ``nn.Linear`` / GPT-2 ``Conv1D`` (attention and MLP
    projections, and the LM head, which both models tie to the token embedding), each once per
    module; embedding lookups, norms, biases and LoRA's own matrices are not in N.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    n = 0
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        if isinstance(module, torch.nn.Linear | Conv1D):
            n += module.weight.numel()
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return {"n_params_total": total, "n_matmul": n, "n_non_embedding": total - embeddings}


def attention_flops_per_token(model: Any, context: int) -> int:
    """Training FLOPs per token in attention scores and mixing: 6 x layers x context x width.

    (Forward: QK^T and AV are 2 x 2 x context x width per layer; backward is twice the forward.)
    """
    config = model.config
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    width = getattr(config, "n_embd", None) or config.hidden_size
    return 6 * layers * context * width


def percentiles(values: Sequence[float], *qs: float) -> dict[str, float]:
    """Nearest-rank percentiles (p50, p95, p99 …) of ``values``."""
    ordered = sorted(values)
    out: dict[str, float] = {}
    for q in qs:
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        out[f"p{q:g}"] = ordered[rank - 1]
    return out


def median(values: Sequence[float]) -> float:
    """The median (a thin alias so scripts read uniformly)."""
    return statistics.median(values)


# Memory ----------------------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident set size in MiB, after returning freed heap to the system."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_1m": round(load[0], 2) if load else None,
    }


def measure_matmul_gflops(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """This machine's fp32 matmul rate: ``size``² x ``size``² products, 2·size³ FLOPs each."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    for _ in range(2):
        torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return {
        "size": size,
        "repeats": repeats,
        "median_gflops": round(statistics.median(rates), 2),
        "max_gflops": round(max(rates), 2),
        "min_gflops": round(min(rates), 2),
    }
