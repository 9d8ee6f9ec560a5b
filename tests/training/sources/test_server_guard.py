"""Server-side request forgery: a server a user names is reached only at a public address.

Names are mapped by a stub of the system resolver (``socket.getaddrinfo``) to loopback servers
that would answer, so the attack is real but nothing leaves the machine: any connection to an
address other than 127.0.0.1 fails the test before a packet is sent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import urllib3.util.connection

from tests.training.sources.mastodon_server import MastodonServer, Reply, Timeline, status
from training.config import TrainingSettings
from training.errors import SourceError
from training.handles import parse_handle
from training.pipeline import open_source
from training.sources import http
from training.sources.bluesky import BlueskySource
from training.sources.http import UNREACHABLE, PinnedAdapter, ServerGuard, is_public_address
from training.sources.mastodon_api import MastodonApiSource

ALICE = parse_handle("mastodon:@alice@social.example")
_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = urllib3.util.connection.create_connection


def _is_literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Host name -> address, answered by the stubbed resolver; every other name fails, and a
    connection anywhere but 127.0.0.1 is an error of the test itself."""
    table: dict[str, str] = {}
    connected: list[Any] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if _is_literal(name):
            return _real_getaddrinfo(host, port, *args, **kwargs)
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = table[name]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (
            (address, int(port or 0), 0, 0)
            if family == socket.AF_INET6
            else (address, int(port or 0))
        )
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        connected.append(address)
        host = address[0]
        if host not in ("127.0.0.1", "::ffff:127.0.0.1", "localhost"):
            raise AssertionError(f"the test tried to connect to {address}")
        return _real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    monkeypatch.setattr(urllib3.connection.connection, "create_connection", create_connection)
    yield table


def _timeline() -> Timeline:
    return Timeline([status(1, "<p>internal secret from the bot's network</p>")])


@pytest.fixture
def internal() -> Iterator[MastodonServer]:
    """A server on the bot's own network that would answer every request."""
    with MastodonServer(_timeline().route) as running:
        yield running


def _port(server: MastodonServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::ffff:127.0.0.1", "192.168.1.2"]
)
def test_a_name_resolving_to_a_non_public_address_is_never_fetched(
    names: dict[str, str], internal: MastodonServer, address: str
) -> None:
    names["internal.example"] = address
    source = MastodonApiSource(base_url=f"http://internal.example:{_port(internal)}")
    with pytest.raises(SourceError) as raised:
        source.fetch(ALICE)
    assert str(raised.value) == UNREACHABLE
    assert internal.requests == []


def test_every_unreachable_server_is_the_same_sentence(
    names: dict[str, str], internal: MastodonServer
) -> None:
    """Blocked, unknown, metadata, refused: the user learns nothing about the network."""
    names["loopback.example"] = "127.0.0.1"
    names["metadata.google.internal"] = "127.0.0.1"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    sentences = set()
    for base, allow in (
        (f"http://loopback.example:{_port(internal)}", False),
        (f"http://metadata.google.internal:{_port(internal)}", False),
        (f"http://[::1]:{_port(internal)}", False),
        (f"http://127.0.0.1:{_port(internal)}", False),
        ("http://no-such-name.example", False),
        (f"http://127.0.0.1:{closed}", True),  # allowed, but nothing listens
    ):
        source = MastodonApiSource(base_url=base, allow_private_servers=allow, timeout=5)
        with pytest.raises(SourceError) as raised:
            source.fetch(ALICE)
        sentences.add(str(raised.value))
    assert sentences == {UNREACHABLE}
    assert internal.requests == []


def test_a_public_server_redirecting_inward_is_not_followed(
    names: dict[str, str], internal: MastodonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """public.example stands for a public server: its address, 127.0.0.1, counts as public in
    this test only. It redirects to the internal server (reached as an IPv4-mapped address) and
    to the metadata service."""
    real = is_public_address
    monkeypatch.setattr(http, "is_public_address", lambda a: a == "127.0.0.1" or real(a))
    names["public.example"] = "127.0.0.1"
    names["inside.example"] = "::ffff:127.0.0.1"
    targets = iter(
        [
            f"http://inside.example:{_port(internal)}/api/v1/accounts/lookup?acct=alice",
            "http://169.254.169.254/latest/meta-data/",
            f"http://[::ffff:127.0.0.1]:{_port(internal)}/api/v1/accounts/lookup",
        ]
    )

    def redirect(path: str, query: dict[str, str]) -> Reply:
        return 302, {"Location": next(targets)}, b""

    with MastodonServer(redirect) as public:
        for _ in range(3):
            source = MastodonApiSource(base_url=f"http://public.example:{_port(public)}")
            with pytest.raises(SourceError) as raised:
                source.fetch(ALICE)
            assert str(raised.value) == UNREACHABLE
        assert len(public.requests) == 3
    assert internal.requests == []


def test_a_redirect_to_a_public_server_is_followed_through_the_same_check(
    names: dict[str, str], internal: MastodonServer
) -> None:
    names["old.example"] = names["new.example"] = "127.0.0.1"
    port = _port(internal)

    def moved(path: str, query: dict[str, str]) -> Reply:
        return 301, {"Location": f"http://new.example:{port}{path}?{urlencode(query)}"}, b""

    with MastodonServer(moved) as old:
        source = MastodonApiSource(
            base_url=f"http://old.example:{_port(old)}", allow_private_servers=True
        )
        posts = source.fetch(ALICE)
    assert [p.text for p in posts] == ["internal secret from the bot's network"]
    assert internal.requests[0][0] == "/api/v1/accounts/lookup"
    assert set(internal.hosts) == {f"new.example:{port}"}


def test_the_connection_goes_to_the_checked_address_with_the_name_kept(
    internal: MastodonServer,
) -> None:
    """One lookup per request, by the guard; the system resolver never sees the name."""
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    port = _port(internal)
    source = MastodonApiSource(
        base_url=f"http://pinned.example:{port}", allow_private_servers=True, resolver=resolver
    )
    posts = source.fetch(ALICE)
    assert [p.text for p in posts] == ["internal secret from the bot's network"]
    assert len(asked) == len(internal.requests) >= 2
    assert set(asked) == {("pinned.example", port)}
    assert set(internal.hosts) == {f"pinned.example:{port}"}


def test_tls_keeps_the_name_for_sni_and_the_certificate_while_connecting_to_the_address() -> None:
    adapter = PinnedAdapter(ServerGuard(resolver=lambda host, port: ["93.184.215.14"]))
    request = requests.Request("GET", "https://social.example/api/v1/instance").prepare()
    host_params, pool_kwargs = adapter.build_connection_pool_key_attributes(request, True)
    assert host_params == {"scheme": "https", "host": "93.184.215.14", "port": 443}
    assert pool_kwargs["server_hostname"] == pool_kwargs["assert_hostname"] == "social.example"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "not an address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)
    guard = ServerGuard(resolver=lambda host, port: ["8.8.8.8", address])
    with pytest.raises(http.ServerUnreachable):
        guard.address("mixed.example", 443)


def test_public_addresses_pass_and_metadata_names_never_resolve() -> None:
    assert is_public_address("8.8.8.8") and is_public_address("2606:4700::1111")
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["8.8.8.8"]

    guard = ServerGuard(resolver=resolver)
    assert guard.address("Social.Example.", 443) == "8.8.8.8"
    for name in ("metadata.google.internal", "METADATA.google.internal.", "instance-data"):
        with pytest.raises(http.ServerUnreachable):
            guard.address(name, 80)
    assert asked == ["social.example"]


def test_private_servers_are_allowed_only_by_the_explicit_setting(monkeypatch: Any) -> None:
    monkeypatch.delenv("DOPPELTWEET_ALLOW_PRIVATE_SERVERS", raising=False)
    assert TrainingSettings(_env_file=None).allow_private_servers is False
    monkeypatch.setenv("doppeltweet_allow_private_servers", "true")
    settings = TrainingSettings(_env_file=None)
    assert settings.allow_private_servers is True
    for spec, handle in (("mastodon", ALICE), ("bluesky", parse_handle("bluesky:a.bsky.social"))):
        source = open_source(spec, handle, settings)
        assert isinstance(source, MastodonApiSource | BlueskySource)
        guard = source._http._session.get_adapter("https://x").guard  # type: ignore[attr-defined]
        assert guard.allow_private is True
    off = open_source(
        "mastodon", ALICE, TrainingSettings(_env_file=None, allow_private_servers=False)
    )
    assert off._http._session.get_adapter("https://x").guard.allow_private is False  # type: ignore[attr-defined]
