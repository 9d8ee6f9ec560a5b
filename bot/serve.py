"""``doppeltweet serve``: the project's tweet generators as a Ray Serve application.

One multiplexed deployment (:func:`build_app`) speaking OpenAI completions
(``POST /v1/completions``); :func:`respond` checks the bearer token, the request's bounds and
turns every failure into one sentence, testable without Ray. The contract and the deployment are
in docs/deployment.md ("Tweets from Ray Serve"); the bot's side is :mod:`bot.remote_generation`.

Registered in the ``doppeltweet.commands`` entry-point group, so ``training`` never imports ray.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import importlib.util
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bot.loopback import is_loopback
from training.errors import DoppeltweetError, InputError, ModelError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from bot.config import BotSettings

log = logging.getLogger(__name__)

APP_NAME = "doppeltweet"
#: The header Ray Serve routes multiplexed requests by.
MODEL_HEADER = "serve_multiplexed_model_id"
#: Most tweets one request may ask for.
MAX_N = 10
#: The sampling values a request may set, each a closed range of finite numbers.
TEMPERATURE_RANGE = (0.1, 2.0)
TOP_P_RANGE = (0.05, 1.0)
#: ``max_tokens`` counts the whole sequence; a tweet needs more than 16 tokens of room.
MAX_TOKENS_RANGE = (17, 1024)
#: Most strings in ``exclude``, and most characters in each.
MAX_EXCLUDE = 1000
MAX_EXCLUDE_CHARS = 1000
#: Largest request body read.
MAX_BODY_BYTES = 1024 * 1024
#: The setting that holds the bearer token (the server requires it, the bot sends it).
TOKEN_SETTING = "DOPPELTWEET_GENERATION_TOKEN"
UNAUTHORIZED = f"A valid bearer token is required ({TOKEN_SETTING})."
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


def _number_field(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    # Whole numbers are compared before any float(): 10**400 must not overflow.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or not low <= value <= high
    ):
        raise InputError(f"{key} must be a number from {low:g} to {high:g}.")
    return float(value)


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
    if (
        not isinstance(exclude, list)
        or len(exclude) > MAX_EXCLUDE
        or not all(isinstance(e, str) and len(e) <= MAX_EXCLUDE_CHARS for e in exclude)
    ):
        raise InputError(
            f"exclude must be a list of at most {MAX_EXCLUDE} strings of at most "
            f"{MAX_EXCLUDE_CHARS} characters."
        )
    sampling: dict[str, Any] = {}
    for key, (low, high) in (("temperature", TEMPERATURE_RANGE), ("top_p", TOP_P_RANGE)):
        value = _number_field(body, key, low, high)
        if value is not None:
            sampling[key] = value
    max_tokens = _int_field(body, "max_tokens", None, *MAX_TOKENS_RANGE)
    if max_tokens is not None:
        sampling["max_length"] = max_tokens
    return {
        "model": model,
        "prompt": prompt,
        "n": _int_field(body, "n", 1, 1, MAX_N),
        "seed": _int_field(body, "seed", None, 0, 2**32 - 1),
        "exclude": exclude,
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


def token_digest(token: str) -> bytes:
    """What the server keeps of the token: its SHA-256, so the secret itself never travels to
    the replicas."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def authorized(header: str | None, digest: bytes | None) -> bool:
    """Whether an ``Authorization`` header carries the bearer token (always, with no token set);
    compared in constant time."""
    if digest is None:
        return True
    scheme, _, presented = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        presented = ""
    return hmac.compare_digest(token_digest(presented.strip()), digest)


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token: anyone who reaches the port could
    generate from every model of every server."""
    if not is_loopback(host) and not (token and token.strip()):
        raise InputError(
            f"Set {TOKEN_SETTING} before serving on {host}: beyond loopback every request must "
            "carry that bearer token."
        )


def generate_with(generator: Any, fields: dict[str, Any]) -> Any:
    """One checked request's tweets from a loaded generator."""
    from dataclasses import replace

    from training.generation import GenerationSettings

    sampling = replace(GenerationSettings(), **fields["sampling"])
    return generator.generate(
        fields["prompt"],
        n=fields["n"],
        seed=fields["seed"],
        exclude=fields["exclude"],
        settings=sampling,
    )


async def respond(
    request: Request,
    *,
    digest: bytes | None,
    header_model: str | None,
    load: Callable[[str], Awaitable[Any]],
) -> JSONResponse:
    """One HTTP request, answered: health, the token, the checked fields, then the tweets;
    every failure is JSON with one sentence, never a bare 500."""
    from starlette.responses import JSONResponse

    path = request.url.path.rstrip("/")
    if path in ("", "/health", "/v1/health"):
        return JSONResponse({"status": "ok"})
    if not authorized(request.headers.get("authorization"), digest):
        return JSONResponse(
            error_body(UNAUTHORIZED, "authentication_error"),
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if path != "/v1/completions" or request.method != "POST":
        return JSONResponse(
            error_body("Only POST /v1/completions is served here.", "not_found"), 404
        )
    too_big = JSONResponse(
        error_body(f"The request body must be at most {MAX_BODY_BYTES // 1024} KB."), 413
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return too_big
    try:
        fields = parse_request(json.loads(body))
    except (ValueError, RecursionError):
        return JSONResponse(error_body("The request body must be JSON."), 400)
    except InputError as error:
        return JSONResponse(error_body(str(error)), 400)
    model_id = header_model or fields["model"]
    if model_id.split("@", 1)[0] != fields["model"].split("@", 1)[0]:
        return JSONResponse(
            error_body(f"The {MODEL_HEADER} header and model name different models."), 400
        )
    try:
        generator = await load(model_id)
        result = await asyncio.to_thread(generate_with, generator, fields)
    except InputError as error:
        return JSONResponse(error_body(str(error)), 400)
    except ModelError as error:
        return JSONResponse(error_body(str(error), "model_not_found"), 404)
    except DoppeltweetError as error:
        return JSONResponse(error_body(str(error), "server_error"), 500)
    except Exception:
        log.exception("generation failed for %s", fields["model"])
        return JSONResponse(
            error_body("The model failed while generating; try again.", "server_error"), 500
        )
    return JSONResponse(completion_body(fields["model"], result))


_SETUP_HOOK_VAR = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"
#: The wrappers :func:`bind_replicas_to_loopback` installed (so a second call wraps nothing).
_LOOPBACK_BINDERS: set[Any] = set()


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

    if not is_loopback(ray.util.get_node_ip_address()):
        return
    original = replica.add_port_to_grpc_server
    if original in _LOOPBACK_BINDERS:
        return

    def on_loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    _LOOPBACK_BINDERS.add(on_loopback)
    replica.add_port_to_grpc_server = on_loopback


def build_app(settings: BotSettings) -> Any:
    """The Ray Serve application (a bound deployment) for ``serve.run``."""
    from ray import serve

    data_dir = str(settings.data_dir.resolve())
    token = (
        settings.generation_token.get_secret_value().strip() if settings.generation_token else ""
    )
    actor_options: dict[str, Any] = {
        "num_cpus": settings.serve_num_cpus,
        "num_gpus": settings.serve_num_gpus,
    }
    if is_loopback(settings.serve_host) or settings.serve_ray_address == "local":
        # The hook acts only on a node whose address is loopback (a local head's is). The
        # variable Ray's worker_process_setup_hook sets; Serve does not pass the option itself
        # on to the replicas it starts (checked with Ray 2.60).
        hook = f"{__name__}.bind_replicas_to_loopback"
        actor_options["runtime_env"] = {"env_vars": {_SETUP_HOOK_VAR: hook}}

    @serve.deployment(
        name="TweetGenerators",
        num_replicas=settings.serve_replicas,
        ray_actor_options=actor_options,
    )
    class TweetGenerators:
        """Generates tweets from any model under the data folder, a few kept loaded per replica."""

        def __init__(self, data_dir: str, digest: bytes | None) -> None:
            self.data_dir = Path(data_dir)
            self.digest = digest

        @serve.multiplexed(max_num_models_per_replica=settings.serve_models_per_replica)
        async def get_model(self, model_id: str) -> Any:
            from training.generation import TweetGenerator

            path = model_id_path(self.data_dir, model_id)
            return await asyncio.to_thread(TweetGenerator.load, path)

        async def __call__(self, request: Request) -> JSONResponse:
            return await respond(
                request,
                digest=self.digest,
                header_model=serve.get_multiplexed_model_id() or None,
                load=self.get_model,
            )

    return TweetGenerators.bind(data_dir, token_digest(token) if token else None)


def build_parser() -> argparse.ArgumentParser:
    """The ``doppeltweet serve`` argument parser."""
    return argparse.ArgumentParser(
        prog="doppeltweet serve",
        description=(
            "Serve the bot's models over HTTP (OpenAI completions: POST /v1/completions) as a "
            "Ray Serve application, until SIGTERM or Ctrl-C. Settings: DOPPELTWEET_DATA_DIR, "
            "DOPPELTWEET_SERVE_HOST, DOPPELTWEET_SERVE_PORT, DOPPELTWEET_SERVE_RAY_ADDRESS, "
            "DOPPELTWEET_SERVE_REPLICAS, DOPPELTWEET_SERVE_NUM_CPUS, DOPPELTWEET_SERVE_NUM_GPUS, "
            "DOPPELTWEET_SERVE_MODELS_PER_REPLICA and DOPPELTWEET_GENERATION_TOKEN (the bearer "
            "token every request must carry; required beyond loopback) (docs/deployment.md)."
        ),
    )


def local_head_options() -> dict[str, Any]:
    """``ray.init`` options of the head ``DOPPELTWEET_SERVE_RAY_ADDRESS=local`` starts: every
    port on loopback (GCS, raylet, dashboard, workers), where no other machine can send it work.

    Ray 2.60 binds its GCS and raylet to the machine's network address, even when told
    127.0.0.1, unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is 0, which Ray reads when it is
    imported: call this first. A head other machines must join is started with ``ray start``
    and token authentication instead (docs/deployment.md).
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return {"address": "local", "_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}


def run(settings: BotSettings, stop: threading.Event) -> None:
    """Deploy the application, wait until ``stop`` is set, then shut Serve down."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Before Ray is imported: it reads its environment once, at import.
    options = (
        local_head_options()
        if settings.serve_ray_address == "local"
        else {"address": settings.serve_ray_address}
    )
    import ray
    from ray import serve

    ray.init(**options, log_to_driver=False)
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
    token = settings.generation_token.get_secret_value() if settings.generation_token else None
    try:
        check_exposure(settings.serve_host, token)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("ray") is None:
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
