"""Ray without a head: the loopback options of a head the product starts, the interpreter of a
head on this machine, and the one sentence for a worker Python that lacks a module."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from bot.config import BotSettings
from bot.launchers.ray_jobs import MISSING_MODULE, RayAttempt, RayJobLauncher
from bot.loopback import is_loopback
from bot.serve import local_head_options


def test_a_local_serve_head_binds_every_port_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    options = local_head_options()
    assert options["address"] == "local"
    assert options["_node_ip_address"] == options["dashboard_host"] == "127.0.0.1"
    # Without it Ray 2.60 binds the GCS and raylet to the machine's address (docs/deployment.md).
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("http://127.0.0.1:8265", True),
        ("http://localhost:8265", True),
        ("http://[::1]:8265", True),
        ("127.0.0.1:8265", True),
        ("http://ray-head:8265", False),
        ("http://10.0.0.5:8265", False),
    ],
)
def test_a_head_on_this_machine_runs_jobs_with_the_bots_interpreter(
    bot_settings: BotSettings, address: str, local: bool
) -> None:
    settings = bot_settings.model_copy(update={"ray_address": address})
    settings.model_fields_set.discard("ray_python")
    assert is_loopback(address) is local
    launcher = RayJobLauncher(settings)
    assert launcher.default_python == (sys.executable if local else "python")
    chosen = BotSettings.model_validate(
        {**settings.model_dump(exclude={"owner_ids"}), "ray_python": "/opt/py/bin/python"}
    )
    assert RayJobLauncher(chosen).default_python == "/opt/py/bin/python"


class _Head:
    """What RayAttempt asks of its launcher, answering one finished job."""

    def __init__(self, message: str, code: int | None) -> None:
        self.info = SimpleNamespace(status="FAILED", message=message, driver_exit_code=code)

    async def call(self, fn: Any) -> Any:
        return self.info


@pytest.mark.parametrize(
    "message",
    [
        "Job entrypoint command failed with exit code 1, last available logs: ...\n"
        "/usr/bin/python: Error while finding module specification for 'training.__main__' "
        "(ModuleNotFoundError: No module named 'training')",
        "Traceback ...\nModuleNotFoundError: No module named 'transformers'",
    ],
)
async def test_a_worker_python_without_doppeltweet_is_one_sentence_naming_the_setting(
    message: str,
) -> None:
    outcome = await RayAttempt(_Head(message, 1), "sid").wait()  # type: ignore[arg-type]
    assert outcome.returncode is None and outcome.message == MISSING_MODULE
    assert "DOPPELTWEET_RAY_PYTHON" in MISSING_MODULE
    other = await RayAttempt(_Head("exit code 3", 3), "sid").wait()  # type: ignore[arg-type]
    assert other.returncode == 3 and other.message == "exit code 3"
