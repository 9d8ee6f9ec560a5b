"""The one loopback rule: a Ray head's address and a listen host are judged alike."""

from __future__ import annotations

import pytest

from bot.loopback import host_of, is_loopback


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "127.255.255.254",
        "localhost",
        "LocalHost",
        "::1",
        "[::1]",
        "[::1]:8000",
        "::ffff:127.0.0.1",
        "127.0.0.2:8265",
        "http://127.0.0.2:8265",
        "http://localhost:8265",
        "http://[::1]:8265",
        " 127.0.0.1 ",
    ],
)
def test_every_loopback_spelling_counts_as_this_machine(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "::",
        "10.0.0.5",
        "128.0.0.1",
        "ray-head",
        "http://ray-head:8265",
        "localhost.example.com",
        "127.0.0.1.nip.io",
        "http://[::1",
        "",
    ],
)
def test_any_other_address_is_beyond_loopback(address: str) -> None:
    assert not is_loopback(address)


def test_host_of_reads_the_host_from_each_form() -> None:
    assert host_of("[::1]:80") == "::1"
    assert host_of("http://Ray-Head:8265/") == "ray-head"
    assert host_of("127.0.0.2:8265") == "127.0.0.2"


def test_the_launcher_and_the_server_use_the_same_rule() -> None:
    from bot import serve
    from bot.launchers import ray_jobs

    assert ray_jobs.is_loopback is is_loopback
    assert serve.is_loopback is is_loopback
