"""``doppeltweet serve``: the project's tweet generators as a Ray Serve application.

One deployment, :func:`build_app`, holds :class:`training.generate.TweetGenerator` instances with
Ray Serve's model multiplexing (``@serve.multiplexed``): a model is named by its folder relative
to ``DOPPELTWEET_DATA_DIR`` (``guilds/<server id>/models/<name>``), each replica keeps up to
``DOPPELTWEET_SERVE_MODELS_PER_REPLICA`` loaded, and a request whose ``serve_multiplexed_model_id``
header names a model goes to a replica that already holds it. A replica loads models as the bot
does: on a CPU with llama.cpp each LoRA model is an adapter on one Q8_0 base the replica loads
once (:mod:`training.generation.llamacpp`), so a multiplexed model id costs an adapter. The HTTP
contract is OpenAI's completions (``POST /v1/completions``), so a client written for it works, and
on GPUs a vLLM
server with multi-LoRA can stand in for Llama-architecture bases (docs/deployment.md).

The filters are the ones local generation applies, server-side: the choices are whole tweets
(prompt included) cut at the first line, without links, within 280 characters, never a copy of a
training tweet. The bot's side is :mod:`bot.remote_generation`.

Registered in the ``doppeltweet.commands`` entry-point group, so ``training`` never imports ray.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from training.errors import DoppeltweetError, InputError, ModelError

if TYPE_CHECKING:
    from bot.config import BotSettings

log = logging.getLogger(__name__)

APP_NAME = "doppeltweet"
#: The header Ray Serve routes multiplexed requests by.
MODEL_HEADER = "serve_multiplexed_model_id"
#: Most tweets one request may ask for.
MAX_N = 10
#: Files that make a folder a model (a completed training writes both).
_MODEL_FILES = ("training.json", "dataset.jsonl")


def model_id_path(data_dir: Path, model: str) -> Path:
    """The folder a model id names: a relative path inside the data folder, nothing else.

    A trailing ``@version`` (the bot adds the folder's identity, so that a retrained model is a
    new model for the multiplexer) is ignored.
    """
    name = model.split("@", 1)[0].strip()
    if not name or len(name) > 400 or "\\" in name or "\0" in name:
        raise InputError("The model must be a model folder's path inside the data folder.")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise InputError("The model must be a model folder's path inside the data folder.")
    root = data_dir.resolve()
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise InputError("The model must be a model folder's path inside the data folder.")
    if not all((path / f).is_file() for f in _MODEL_FILES):
        raise ModelError(f"There is no trained model at {name}.")
    return path


def _int_field(body: dict[str, Any], key: str, default: int | None, low: int, high: int) -> Any:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{key} must be a whole number from {low} to {high}.")
    return value


def parse_request(body: Any) -> dict[str, Any]:
    """The checked fields of an OpenAI completions request (``model``, ``prompt``, ``n``, …)."""
    if not isinstance(body, dict):
        raise InputError("The request body must be a JSON object.")
    model, prompt = body.get("model"), body.get("prompt", "")
    if not isinstance(model, str) or not model:
        raise InputError("model must name a model folder, e.g. guilds/1/models/alice.")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InputError("prompt must be one string.")
    exclude = body.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
        raise InputError("exclude must be a list of strings.")
    sampling: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        if key in body and body[key] is not None:
            value = body[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(f"{key} must be a number.")
            sampling[key] = float(value)
    max_tokens = _int_field(body, "max_tokens", None, 16, 1024)
    if max_tokens is not None:
        sampling["max_length"] = max_tokens
    return {
        "model": model,
        "prompt": prompt,
        "n": _int_field(body, "n", 1, 1, MAX_N),
        "seed": _int_field(body, "seed", None, 0, 2**32 - 1),
        "exclude": exclude[:1000],
        "sampling": sampling,
    }


def completion_body(model: str, result: Any) -> dict[str, Any]:
    """An OpenAI ``text_completion`` object from a :class:`GenerationResult`.

    ``doppeltweet`` carries what OpenAI's schema has no field for (candidates and rejects).
    """
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": text, "finish_reason": "stop", "logprobs": None}
            for i, text in enumerate(result.tweets)
        ],
        "doppeltweet": {
            "prompt": result.prompt,
            "candidates": result.candidates,
            "rejected": result.rejected,
            "rejected_reasons": dict(result.rejected_reasons),
        },
    }


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_SETUP_HOOK_VAR = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"


def bind_replicas_to_loopback() -> None:
    """Keep a replica's internal gRPC server on loopback on a loopback-only node.

    Ray Serve 2.60 replicas open an inter-deployment gRPC server on every interface (``[::]:0``,
    hard-coded in ``ray.serve._private.replica``), even on a node whose address is 127.0.0.1 and
    with the HTTP proxy on 127.0.0.1. Run in each replica's worker process (the runtime env's
    ``worker_process_setup_hook``, set when ``DOPPELTWEET_SERVE_HOST`` is loopback), it binds that
    server to 127.0.0.1 instead, but only when the node itself is 127.0.0.1, where nothing else
    could reach it anyway.
    """
    import ray
    from ray.serve._private import replica

    if ray.util.get_node_ip_address() not in _LOOPBACK:
        return
    original = replica.add_port_to_grpc_server
    if getattr(original, "doppeltweet_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    on_loopback.doppeltweet_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_loopback


def build_app(settings: BotSettings) -> Any:
    """The Ray Serve application (a bound deployment) for ``serve.run``."""
    import asyncio

    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    data_dir = str(settings.data_dir.resolve())
    actor_options: dict[str, Any] = {
        "num_cpus": settings.serve_num_cpus,
        "num_gpus": settings.serve_num_gpus,
    }
    if settings.serve_host in _LOOPBACK:
        # The variable Ray's worker_process_setup_hook sets; Serve does not pass the option
        # itself on to the replicas it starts (checked with Ray 2.60).
        hook = f"{__name__}.bind_replicas_to_loopback"
        actor_options["runtime_env"] = {"env_vars": {_SETUP_HOOK_VAR: hook}}

    @serve.deployment(
        name="TweetGenerators",
        num_replicas=settings.serve_replicas,
        ray_actor_options=actor_options,
    )
    class TweetGenerators:
        """Generates tweets from any model under the data folder, a few kept loaded per replica."""

        def __init__(self, data_dir: str) -> None:
            self.data_dir = Path(data_dir)

        @serve.multiplexed(max_num_models_per_replica=settings.serve_models_per_replica)
        async def get_model(self, model_id: str) -> Any:
            from training.generate import TweetGenerator

            path = model_id_path(self.data_dir, model_id)
            return await asyncio.to_thread(TweetGenerator.load, path)

        async def __call__(self, request: Request) -> JSONResponse:
            if request.url.path.rstrip("/") in ("", "/health", "/v1/health"):
                return JSONResponse({"status": "ok"})
            if request.url.path.rstrip("/") != "/v1/completions" or request.method != "POST":
                return JSONResponse(
                    error_body("Only POST /v1/completions is served here.", "not_found"), 404
                )
            try:
                fields = parse_request(await request.json())
            except ValueError:
                return JSONResponse(error_body("The request body must be JSON."), 400)
            except InputError as error:
                return JSONResponse(error_body(str(error)), 400)
            model_id = serve.get_multiplexed_model_id() or fields["model"]
            if model_id.split("@", 1)[0] != fields["model"].split("@", 1)[0]:
                return JSONResponse(
                    error_body(f"The {MODEL_HEADER} header and model name different models."),
                    400,
                )
            try:
                generator = await self.get_model(model_id)
                result = await asyncio.to_thread(self._generate, generator, fields)
            except InputError as error:
                return JSONResponse(error_body(str(error)), 400)
            except ModelError as error:
                return JSONResponse(error_body(str(error), "model_not_found"), 404)
            except DoppeltweetError as error:
                return JSONResponse(error_body(str(error), "server_error"), 500)
            return JSONResponse(completion_body(fields["model"], result))

        @staticmethod
        def _generate(generator: Any, fields: dict[str, Any]) -> Any:
            from dataclasses import replace

            from training.generate import GenerationSettings

            sampling = replace(GenerationSettings(), **fields["sampling"])
            return generator.generate(
                fields["prompt"],
                n=fields["n"],
                seed=fields["seed"],
                exclude=fields["exclude"],
                settings=sampling,
            )

    return TweetGenerators.bind(data_dir)


def build_parser() -> argparse.ArgumentParser:
    """The ``doppeltweet serve`` argument parser."""
    return argparse.ArgumentParser(
        prog="doppeltweet serve",
        description=(
            "Serve the bot's models over HTTP (OpenAI completions: POST /v1/completions) as a "
            "Ray Serve application, until SIGTERM or Ctrl-C. Settings: DOPPELTWEET_DATA_DIR, "
            "DOPPELTWEET_SERVE_HOST, DOPPELTWEET_SERVE_PORT, DOPPELTWEET_SERVE_RAY_ADDRESS, "
            "DOPPELTWEET_SERVE_REPLICAS, DOPPELTWEET_SERVE_NUM_CPUS, DOPPELTWEET_SERVE_NUM_GPUS "
            "and DOPPELTWEET_SERVE_MODELS_PER_REPLICA (docs/deployment.md)."
        ),
    )


def run(settings: BotSettings, stop: threading.Event) -> None:
    """Deploy the application, wait until ``stop`` is set, then shut Serve down."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = None if settings.serve_ray_address == "local" else settings.serve_ray_address
    ray.init(address=address, log_to_driver=False)
    try:
        serve.start(http_options={"host": settings.serve_host, "port": settings.serve_port})
        serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
        print(
            f"serving on http://{settings.serve_host}:{settings.serve_port}/v1/completions",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def main(argv: Sequence[str]) -> int:
    """Entry point of ``doppeltweet serve``; returns the exit code."""
    build_parser().parse_args(list(argv))
    from bot.cli import _settings_error
    from bot.config import BotSettings

    try:
        settings = BotSettings()
    except ValidationError as error:
        print(f"error: {_settings_error(error)}", file=sys.stderr)
        return 2
    try:
        import ray  # noqa: F401
    except ImportError:
        print(
            "error: doppeltweet serve needs Ray: pip install 'doppeltweet[ray]'.", file=sys.stderr
        )
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run(settings, stop)
    except ConnectionError as error:
        print(f"error: Ray could not be reached ({error}).", file=sys.stderr)
        return 2
    return 0
