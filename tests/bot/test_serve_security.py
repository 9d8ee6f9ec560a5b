"""``doppeltweet serve``'s HTTP side without Ray: the bearer token, the request bounds, no bare 500.

The real request handler (:func:`bot.serve.respond`, the one the Ray Serve deployment calls)
answers over HTTP on 127.0.0.1 (uvicorn), generating from a real tiny model, and the bot's real
client talks to it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.config import BotSettings
from bot.remote_generation import RemoteGenerator, remote_loader
from bot.serve import (
    MAX_BODY_BYTES,
    UNAUTHORIZED,
    authorized,
    check_exposure,
    main,
    model_id_path,
    parse_request,
    respond,
    token_digest,
)
from training.errors import InputError, ModelError

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

TOKEN = "s3cret-token-for-tests"
MODEL = "guilds/1/models/alice"


class Server:
    """``respond`` served on a loopback port by uvicorn in a thread."""

    def __init__(self, data_dir: Path, digest: bytes | None, load: Callable[[str], Any]) -> None:
        from starlette.requests import Request

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            request = Request(scope, receive)
            response = await respond(
                request,
                digest=digest,
                header_model=request.headers.get("serve_multiplexed_model_id"),
                load=load,
            )
            await response(scope, receive, send)

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            threading.Event().wait(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def post(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/completions",
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def _model_loader(data_dir: Path) -> Callable[[str], Any]:
    from training.generation import TweetGenerator

    loaded: dict[str, Any] = {}

    async def load(model_id: str) -> Any:
        path = model_id_path(data_dir, model_id)
        if model_id not in loaded:
            loaded[model_id] = await asyncio.to_thread(TweetGenerator.load, path)
        return loaded[model_id]

    return load


@pytest.fixture
def data_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / MODEL)
    return tmp_path


@pytest.fixture
def guarded(data_dir: Path) -> Iterator[Server]:
    with Server(data_dir, token_digest(TOKEN), _model_loader(data_dir)) as server:
        yield server


def test_a_request_without_the_token_gets_401_and_no_tweet(guarded: Server) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
    ):
        status, body = guarded.post({"model": MODEL, "n": 1}, headers)
        assert status == 401, headers
        assert body["error"]["message"] == UNAUTHORIZED
        assert "choices" not in body
    status, body = guarded.post({"model": MODEL, "n": 1}, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and len(body["choices"]) == 1


def test_the_bots_client_sends_the_token_and_says_one_sentence_when_refused(
    guarded: Server, make_settings: Callable[..., BotSettings]
) -> None:
    good = RemoteGenerator(guarded.url, MODEL, "1", timeout_s=60, token=TOKEN)
    assert len(good.generate("My dream is", n=1, seed=1).tweets) <= 1
    bad = RemoteGenerator(guarded.url, MODEL, "1", timeout_s=60, token="nope")
    with pytest.raises(ModelError) as raised:
        bad.generate("My dream is", n=1)
    assert str(raised.value) == (
        f"The generation server at {guarded.url} refused the bot's token; set "
        "DOPPELTWEET_GENERATION_TOKEN to the server's."
    )
    settings = make_settings(generation_url=guarded.url, generation_token=SecretStr(TOKEN))
    loader = remote_loader(settings)
    remote = loader(settings.data_dir / MODEL)
    assert remote._session.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_p", 1e-300),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_p", "0.9"),
        ("temperature", float("inf")),
        ("temperature", float("nan")),
        ("temperature", -1),
        ("temperature", 0),
        ("temperature", 10**400),
        ("temperature", True),
        ("max_tokens", 16),
        ("max_tokens", 10**9),
        ("max_tokens", 60.5),
        ("n", 11),
        ("n", -1),
        ("seed", -5),
        ("exclude", ["x" * 1001]),
        ("exclude", ["x"] * 1001),
    ],
)
def test_every_sampling_value_is_range_checked_with_one_sentence(
    guarded: Server, field: str, value: Any
) -> None:
    with pytest.raises(InputError) as raised:
        parse_request({"model": MODEL, field: value})
    sentence = str(raised.value)
    assert sentence.startswith(field) and sentence.endswith(".") and sentence.count(". ") == 0
    if isinstance(value, float) and value != value:  # NaN is no JSON; sent as Python writes it
        return
    raw = json.dumps({"model": MODEL, field: value}).encode()  # Infinity, as JSON.parse takes
    status, body = guarded.post(raw, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 400 and body["error"]["message"] == sentence


def test_nan_and_garbage_bodies_are_400_and_oversized_bodies_413(guarded: Server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = guarded.post(b'{"model": "m", "temperature": NaN}', auth)
    assert status == 400 and body["error"]["message"].startswith("temperature must be")
    for garbage in (b"{", b"\xff\xfe", b"[" * 100_000):
        status, body = guarded.post(garbage, auth)
        assert (status, body["error"]["message"]) == (400, "The request body must be JSON.")
    # Refused from the declared length alone, before any of the body is read; the body is not
    # sent, since the server may answer and close while a client is still sending it.
    connection = http.client.HTTPConnection(guarded.url.removeprefix("http://"), timeout=60)
    try:
        connection.putrequest("POST", "/v1/completions")
        for name, value in {**auth, "Content-Length": str(MAX_BODY_BYTES + 1)}.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["message"] == (
            f"The request body must be at most {MAX_BODY_BYTES // 1024} KB."
        )
    finally:
        connection.close()


def test_a_generator_that_breaks_is_a_json_500_with_one_sentence(data_dir: Path) -> None:
    class Broken:
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("CUDA error: device-side assert triggered at /srv/secret/path")

    async def load(model_id: str) -> Any:
        return Broken()

    with Server(data_dir, None, load) as server:
        status, body = server.post({"model": MODEL})
    assert status == 500
    assert body["error"]["message"] == "The model failed while generating; try again."


def test_the_token_is_compared_whole_and_only_as_a_bearer() -> None:
    digest = token_digest(TOKEN)
    assert authorized(f"Bearer {TOKEN}", digest) and authorized(f"bearer  {TOKEN} ", digest)
    assert not authorized(None, digest) and not authorized(TOKEN, digest)
    assert not authorized(f"Bearer {TOKEN[:-1]}", digest)
    assert authorized(None, None)  # no token set: a loopback server answers everyone


def test_serving_beyond_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        check_exposure(host, None)
    for host in ("0.0.0.0", "::", "10.0.0.4", "ray-head"):
        with pytest.raises(InputError) as raised:
            check_exposure(host, "  ")
        assert str(raised.value) == (
            f"Set DOPPELTWEET_GENERATION_TOKEN before serving on {host}: beyond loopback every "
            "request must carry that bearer token."
        )
        check_exposure(host, TOKEN)
    monkeypatch.setenv("DOPPELTWEET_SERVE_HOST", "0.0.0.0")
    monkeypatch.delenv("DOPPELTWEET_GENERATION_TOKEN", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: Set DOPPELTWEET_GENERATION_TOKEN before serving on 0.0.0.0: beyond loopback "
        "every request must carry that bearer token.\n"
    )
