"""The HTTP client every free network source reads through: bounded in size, time and attempts.

A source names the service (for its sentences) and the settings that set its bounds; each
response is read as it arrives, refused past the size cap, and the whole fetch (every page)
ends at one deadline however slowly a server answers, even one byte at a time.

The servers are named by users (``mastodon:@alice@some.host``), so every connection goes
through :class:`ServerGuard`: the host name is resolved once, every address it resolves to must
be public (``ipaddress``'s ``is_global``, IPv4 inside IPv6 included, cloud metadata names
refused), and the connection goes to the address that was checked, with TLS still verifying the
certificate for the name. A redirect is followed only through the same check, and every way a
server cannot be reached is the one sentence :data:`UNREACHABLE`, so the errors tell a user
nothing about the bot's network. ``DOPPELTWEET_ALLOW_PRIVATE_SERVERS`` lifts the address rule
for tests and private deployments.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from training.errors import InputError, SourceError

_CHUNK = 64 * 1024
_USER_AGENT = "doppeltweet"
#: The one sentence for a server that cannot be reached, whatever the reason.
UNREACHABLE = "That server cannot be reached from this bot."
#: Most redirects one request follows (each hop checked like the first).
MAX_REDIRECTS = 3
#: Names of cloud metadata services, refused before any lookup (their addresses are link-local,
#: refused too, but a resolver may map them anywhere).
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: ``(host, port)`` to the addresses it resolves to; :func:`system_resolver` unless a test says.
Resolver = Callable[[str, int], Sequence[str]]


class ServerUnreachable(requests.ConnectionError):
    """A server the guard refuses or cannot resolve; its text is always :data:`UNREACHABLE`."""

    def __init__(self) -> None:
        super().__init__(UNREACHABLE)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system's resolver gives for ``host`` (one lookup)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(address: str) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local, shared,
    reserved or multicast, also when an IPv4 address hides inside an IPv6 one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is None and ip.teredo is not None:
            inner = ip.teredo[1]
        if inner is not None and not is_public_address(str(inner)):
            return False
    return ip.is_global and not ip.is_multicast


class ServerGuard:
    """Resolves a host once and answers the address to connect to, or refuses it.

    With ``allow_private`` (``DOPPELTWEET_ALLOW_PRIVATE_SERVERS``) any address is accepted, for
    tests and private deployments; the lookup still happens once and is still pinned.
    """

    def __init__(self, *, allow_private: bool = False, resolver: Resolver | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver or system_resolver

    def address(self, host: str, port: int) -> str:
        """The checked address of ``host``; :class:`ServerUnreachable` for anything else."""
        name = host.strip("[]").rstrip(".").lower()
        if not name:
            raise ServerUnreachable()
        if not self.allow_private and name in METADATA_NAMES:
            raise ServerUnreachable()
        try:
            addresses = [str(ipaddress.ip_address(name.split("%", 1)[0]))]
        except ValueError:
            try:
                addresses = list(self.resolver(name, port))
            except (OSError, UnicodeError, ValueError):
                raise ServerUnreachable() from None
        if not addresses:
            raise ServerUnreachable()
        if not self.allow_private and not all(is_public_address(a) for a in addresses):
            raise ServerUnreachable()
        return addresses[0]


class PinnedAdapter(HTTPAdapter):
    """A transport that connects to the address :class:`ServerGuard` checked, never to a second
    lookup of the name; the ``Host`` header, TLS's server name and the certificate check keep
    the name. Proxies are not used: a proxy would look the name up again."""

    def __init__(self, guard: ServerGuard) -> None:
        super().__init__(max_retries=0)
        self.guard = guard

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerUnreachable()
        pinned = request.copy()
        pinned.headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        kwargs["proxies"] = {}
        return super().send(pinned, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        name = host_params["host"]
        port = host_params["port"] or (443 if host_params["scheme"] == "https" else 80)
        host_params["host"] = self.guard.address(name, port)
        host_params["port"] = port
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = name
            pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs


def guarded_session(guard: ServerGuard) -> requests.Session:
    """A session whose every connection, redirects included, goes through ``guard``."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    adapter = PinnedAdapter(guard)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def check_base_url(base_url: str, service: str, example: str) -> str:
    """``http(s)://host[:port][/path]`` without a query, without its trailing ``/``.

    Anything else is refused in one sentence.
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise InputError(f"The {service} API base URL must look like {example}, not {base_url!r}.")
    return base_url.strip().rstrip("/")


@dataclass(frozen=True, slots=True)
class Answer:
    """A response read in full (status, headers, body) within the bounds."""

    status_code: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class BoundedHttp:
    """GET requests to one service within a response size cap and an overall deadline.

    ``reading`` completes "Reading … took longer than" (``the Bluesky feed``); the settings
    ``<settings_prefix>_MAX_RESPONSE_MB`` and ``<settings_prefix>_DEADLINE_S`` are quoted in the
    sentences that refuse a response or a fetch over its bound.
    """

    def __init__(
        self,
        service: str,
        *,
        session: requests.Session | None,
        timeout: float,
        max_response_bytes: int,
        deadline_s: float,
        reading: str,
        settings_prefix: str,
        allow_private_servers: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        """``session`` (tests) replaces the guarded session; every other fetch is guarded."""
        if not timeout > 0:
            raise InputError(f"The {service} request timeout must be positive, not {timeout}.")
        if not max_response_bytes > 0 or not deadline_s > 0:
            raise InputError(f"The {service} response size and fetch deadline must be positive.")
        self.service = service
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.deadline_s = deadline_s
        self.reading = reading
        self.size_setting = f"{settings_prefix}_MAX_RESPONSE_MB"
        self.deadline_setting = f"{settings_prefix}_DEADLINE_S"
        self._session = (
            session
            if session is not None
            else guarded_session(
                ServerGuard(allow_private=allow_private_servers, resolver=resolver)
            )
        )
        self._deadline = 0.0

    def start(self) -> None:
        """Begin a fetch: its deadline is ``deadline_s`` from now."""
        self._deadline = time.monotonic() + self.deadline_s

    def remaining(self) -> float:
        """Seconds left before the fetch's deadline (negative once past it)."""
        return self._deadline - time.monotonic()

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, but never past the deadline."""
        time.sleep(min(seconds, max(0.0, self.remaining())))

    def past_deadline(self) -> SourceError:
        return SourceError(
            f"Reading {self.reading} took longer than {self.deadline_s:g} seconds, the limit "
            f"set by {self.deadline_setting}; try again later."
        )

    def get(
        self, url: str, params: dict[str, str], *, retry_5xx_after: float | None = None
    ) -> Answer:
        """One GET, read in full within the bounds; with ``retry_5xx_after``, a server failure
        (5xx) is asked once more after that pause (never past the deadline)."""
        answer = self._get_once(url, params)
        if retry_5xx_after is not None and answer.status_code >= 500:
            self.pause(retry_5xx_after)
            answer = self._get_once(url, params)
        return answer

    def _get_once(self, url: str, params: dict[str, str]) -> Answer:
        remaining = self.remaining()
        if remaining <= 0:
            raise self.past_deadline()
        try:
            with self._session.get(
                url,
                params=params,
                timeout=min(self.timeout, remaining),
                headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
                stream=True,
            ) as response:
                return Answer(response.status_code, response.headers, self._body(response))
        except requests.Timeout:
            if self.remaining() <= 0:
                raise self.past_deadline() from None
            raise SourceError(
                f"{self.service} did not answer within {self.timeout:g} seconds; try again later."
            ) from None
        except (requests.ConnectionError, requests.TooManyRedirects):
            # Refused, unresolvable, closed or a broken TLS: one sentence, so no error is an oracle.
            raise SourceError(UNREACHABLE) from None
        except requests.RequestException:
            raise SourceError(
                f"The request to {self.service} failed before {self.service} answered."
            ) from None

    def _body(self, response: requests.Response) -> bytes:
        """The response body, read as it arrives, within the size cap and the deadline."""
        too_big = SourceError(
            f"{self.service} sent a response over {self.max_response_bytes / (1024 * 1024):g} "
            f"MB, the limit set by {self.size_setting}."
        )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            raise too_big
        body = bytearray()
        raw = response.raw
        while True:
            if self.remaining() <= 0:
                raise self.past_deadline()
            # read1 returns what one read of the socket gave, so a server dripping bytes is
            # checked against the deadline between drips, not only once the chunk is full.
            chunk = raw.read1(_CHUNK, decode_content=True)
            if not chunk:
                break
            body += chunk
            if len(body) > self.max_response_bytes:
                raise too_big
        return bytes(body)


def load_json(answer: Answer, service: str) -> Any:
    """The answer's JSON, or one sentence saying the service sent something else."""
    try:
        return answer.json()
    except ValueError:
        raise SourceError(f"{service} sent a response that is not valid JSON.") from None
    except RecursionError:
        raise SourceError(f"{service} sent a response nested too deeply to read.") from None
