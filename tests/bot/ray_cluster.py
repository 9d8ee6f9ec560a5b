"""One real local Ray head for the test session (no mock of Ray), on 127.0.0.1 only.

``ray start --head`` takes ~20 s and ~1.6 GB, so it starts once per session, on the first test
that asks for it, and ``ray stop`` runs at the end. Every socket stays on loopback: the address
flags and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (docs/FACTS: without it Ray binds its GCS and
raylet to the machine's network address). A test that stops the head (to see a job lost with its
cluster) calls :meth:`RayHead.stop`; the next test that needs it gets it started again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # The tests' jobs and replicas are small; a short reconnect keeps a lost head quick to see.
    "RAY_gcs_rpc_server_reconnect_timeout_s": "10",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_bin() -> str:
    found = Path(sys.executable).with_name("ray")
    if found.exists():
        return str(found)
    return shutil.which("ray") or "ray"


class RayHead:
    """A ``ray start --head`` on loopback with its own ports."""

    def __init__(self) -> None:
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.client_port = free_port()
        self.running = False
        self.env = {**os.environ, **RAY_ENV}
        # The jobs' `python` is the test's interpreter, whose venv has doppeltweet installed.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def start(self) -> None:
        if self.running:
            return
        cmd = [
            _ray_bin(),
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(self.gcs_port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(self.dashboard_port),
            "--ray-client-server-port",
            str(self.client_port),
            "--num-cpus",
            "4",
            "--num-gpus",
            "0",
            "--disable-usage-stats",
        ]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{done.stdout}\n{done.stderr}")
        self.running = True
        deadline = time.monotonic() + 240
        while True:  # the Jobs API answers a little after `ray start` returns
            try:
                with urllib.request.urlopen(f"{self.jobs_address}/api/version", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self._wait_for_job_agent(deadline)

    def _wait_for_job_agent(self, deadline: float) -> None:
        """Submit a no-op job until the head's job agent takes it ("No available agent to
        submit job" comes for a while after the API answers on a busy machine), then wait for
        it to end, so the tests' own jobs start at once."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(self.jobs_address)
        while True:
            try:
                warmup = client.submit_job(
                    entrypoint="true", submission_id=f"warmup-{time.monotonic_ns()}"
                )
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        while client.get_job_status(warmup) not in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the Ray head's warm-up job did not end in time")
            time.sleep(0.5)

    def stop(self) -> None:
        subprocess.run(
            [_ray_bin(), "stop", "--force"], env=self.env, capture_output=True, timeout=120
        )
        self.running = False


@pytest.fixture(scope="session")
def ray_session() -> Iterator[RayHead]:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    head = RayHead()
    try:
        yield head
    finally:
        if head.running:
            head.stop()


@pytest.fixture
def ray_head(ray_session: RayHead) -> RayHead:
    """The session's Ray head, started (again) if needed."""
    ray_session.start()
    return ray_session
