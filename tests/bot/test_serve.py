"""``doppeltweet serve`` (a multiplexed Ray Serve app) and the bot as its client.

The request checks run without Ray; the rest runs the real ``doppeltweet serve`` against the
session's local Ray head (tests/bot/ray_cluster.py) on loopback, and the real bot (simcord) with
``DOPPELTWEET_GENERATION_URL`` pointing at it answers ``!tweet`` for two models.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import simcord
from discord_world import World
from ray_cluster import RayHead, free_port

from bot.client import create_bot
from bot.config import BotSettings
from bot.remote_generation import RemoteGenerator, model_id
from bot.serve import model_id_path, parse_request
from bot.store import Store
from training.errors import InputError, ModelError
from training.handles import parse_handles


def make_model(data_dir: Path, guild: int, name: str, source: Path) -> Path:
    folder = data_dir / "guilds" / str(guild) / "models" / name
    shutil.copytree(source, folder)
    return folder


def test_a_model_id_is_a_model_folder_inside_the_data_folder(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    folder = make_model(tmp_path, 1, "alice", tiny_model_dir)
    assert model_id_path(tmp_path, "guilds/1/models/alice") == folder.resolve()
    assert model_id_path(tmp_path, "guilds/1/models/alice@123-456") == folder.resolve()
    for bad in ("/etc", "../x", "guilds/../../etc", "", "a\\b"):
        with pytest.raises(InputError):
            model_id_path(tmp_path, bad)
    with pytest.raises(ModelError, match="no trained model at guilds/1/models/bob"):
        model_id_path(tmp_path, "guilds/1/models/bob")
    (tmp_path / "guilds" / "1" / "models" / "empty").mkdir()
    with pytest.raises(ModelError):
        model_id_path(tmp_path, "guilds/1/models/empty")
    assert model_id(tmp_path, folder) == "guilds/1/models/alice"
    with pytest.raises(ModelError):
        model_id(tmp_path / "guilds", tmp_path / "elsewhere")


def test_completions_requests_are_checked_field_by_field() -> None:
    ok = parse_request({"model": "m", "prompt": ["hi"], "n": 3, "max_tokens": 60, "seed": 1})
    assert ok["prompt"] == "hi" and ok["n"] == 3 and ok["sampling"] == {"max_length": 60}
    for bad, word in (
        ([], "JSON object"),
        ({"prompt": "x"}, "model"),
        ({"model": "m", "prompt": 3}, "prompt"),
        ({"model": "m", "n": 0}, "n must"),
        ({"model": "m", "n": True}, "n must"),
        ({"model": "m", "exclude": "x"}, "exclude"),
        ({"model": "m", "temperature": "hot"}, "temperature"),
    ):
        with pytest.raises(InputError, match=word):
            parse_request(bad)


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Served:
    def __init__(self, url: str, data_dir: Path, proc: subprocess.Popen[str]) -> None:
        self.url, self.data_dir, self.proc = url, data_dir, proc


@pytest.fixture
def served(ray_head: RayHead, tmp_path: Path, tiny_model_dir: Path) -> Iterator[Served]:
    """``doppeltweet serve`` on the session's head, over a data folder with two models."""
    data_dir = tmp_path / "data"
    make_model(data_dir, 1001, "alice", tiny_model_dir)
    make_model(data_dir, 1001, "bob", tiny_model_dir)
    port = free_port()
    env = {
        **ray_head.env,
        "DOPPELTWEET_DATA_DIR": str(data_dir),
        "DOPPELTWEET_SERVE_RAY_ADDRESS": ray_head.gcs_address,
        "DOPPELTWEET_SERVE_PORT": str(port),
        "DOPPELTWEET_SERVE_NUM_CPUS": "0.5",
        "DOPPELTWEET_SERVE_MODELS_PER_REPLICA": "2",
    }
    doppeltweet = Path(sys.executable).with_name("doppeltweet")
    proc = subprocess.Popen(
        [str(doppeltweet), "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"doppeltweet serve did not come up:\n{output[-4000:]}")
            time.sleep(0.5)
        yield Served(url, data_dir, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _listening_addresses() -> dict[str, set[str]]:
    """Every TCP port Ray's processes (and the serve command) listen on, by address."""
    import psutil

    pids = set()
    for process in psutil.process_iter(["cmdline", "name"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "ray" in cmdline or process.info["name"] in ("raylet", "gcs_server"):
            pids.add(process.pid)
    found: dict[str, set[str]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.setdefault(conn.laddr.ip, set()).add(str(conn.laddr.port))
    return found


@pytest.mark.ray
@pytest.mark.timeout(400)
async def test_the_serve_deployment_answers_tweet_for_two_models_like_local_generation(
    served: Served,
    bot_settings: BotSettings,
    store: Store,
    tiny_model_dir: Path,
    reset_cooldowns: None,
) -> None:
    from training.generation import TweetGenerator

    # The same tweets as local generation with the same seed: the filters run on the server.
    alice = served.data_dir / "guilds" / "1001" / "models" / "alice"
    remote = RemoteGenerator(served.url, "guilds/1001/models/alice", "1", timeout_s=120)
    got = remote.generate("My dream is", n=2, seed=3)
    local = TweetGenerator.load(alice).generate("My dream is", n=2, seed=3)
    assert got.tweets == local.tweets and got.candidates == local.candidates
    assert all(len(t) <= 280 and "http" not in t for t in got.tweets)

    status, body = _post(f"{served.url}/v1/completions", {"model": "../../etc", "prompt": "x"})
    assert status == 400 and body["error"]["message"].startswith("The model must be")
    status, body = _post(f"{served.url}/v1/completions", {"model": "guilds/1001/models/carol"})
    assert status == 404 and body["error"]["message"] == (
        "There is no trained model at guilds/1001/models/carol."
    )

    addresses = _listening_addresses()  # ::ffff:127.0.0.1 is loopback too (IPv4-mapped)
    assert addresses and set(addresses) <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses

    settings = bot_settings.model_copy(
        update={"data_dir": served.data_dir, "generation_url": served.url, "tweet_cooldown_s": 0}
    )
    bot = create_bot(settings, store=store)  # its own cache: the generation server's client
    try:
        async with simcord.run(bot, settle_timeout=240) as env:
            world = World(env)
            for name in ("alice", "bob"):
                folder = settings.guild_models_dir(world.guild.id) / name
                shutil.copytree(tiny_model_dir, folder)
                await store.upsert_model(
                    world.guild.id,
                    name,
                    handles=parse_handles([name]),
                    sources=[],
                    base_model="tiny",
                    lora=False,
                    path=folder,
                    trained_by=world.alice.id,
                )
            for name in ("alice", "bob"):
                await world.bob.send(world.channel, f"!tweet @{name} My dream is")
                answer = world.channel.last_message
                assert answer.embeds, answer.content
                embed = answer.embeds[0]
                assert embed.footer.text == f"AI-generated by doppeltweet · {name}"
                assert embed.description
            loaded = bot.cache.loaded()
            assert {m.path.name for m in loaded} == {"alice", "bob"}
            assert all(m.memory_bytes == 1 for m in loaded)  # held by the server, not the bot
    finally:
        await bot.close()


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_a_head_serve_starts_itself_listens_on_loopback_only(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """``DOPPELTWEET_SERVE_RAY_ADDRESS=local``: the head serve starts (GCS, raylet, dashboard,
    workers, replicas) has every port on loopback, without the tests' Ray variables."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    data_dir = tmp_path / "data"
    make_model(data_dir, 1001, "alice", tiny_model_dir)
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RAY_") and not key.startswith("DOPPELTWEET_")
    }
    env.update(
        {
            "HOME": str(tmp_path),  # Ray keeps the local head's token under ~/.ray
            "DOPPELTWEET_DATA_DIR": str(data_dir),
            "DOPPELTWEET_SERVE_RAY_ADDRESS": "local",
            "DOPPELTWEET_SERVE_PORT": str(port),
            "DOPPELTWEET_SERVE_NUM_CPUS": "0.5",
        }
    )
    doppeltweet = Path(sys.executable).with_name("doppeltweet")
    proc = subprocess.Popen(
        [str(doppeltweet), "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"doppeltweet serve did not come up:\n{output[-4000:]}")
            time.sleep(0.5)
        status, _ = _post(f"{url}/v1/completions", {"model": "guilds/1001/models/alice", "n": 1})
        assert status == 200
        addresses = _listening_addresses()
        assert addresses and set(addresses) <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_serve_is_a_doppeltweet_subcommand_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--help"])
    assert stopped.value.code == 0
    assert "POST /v1/completions" in capsys.readouterr().out


def test_the_training_library_never_imports_ray() -> None:
    import subprocess as sp

    code = (
        "import sys, training.cli, training.train, training.generation; print('ray' in sys.modules)"
    )
    done = sp.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_an_unreachable_generation_server_is_one_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    remote = RemoteGenerator(url, "guilds/1/models/alice", "1", timeout_s=5)
    with pytest.raises(ModelError) as raised:
        remote.generate("hello", n=1)
    assert str(raised.value) == (
        f"The generation server at {url} did not answer; try again in a moment."
    )
