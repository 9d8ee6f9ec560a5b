"""The HTTP client every free network source reads through: bounded in size, time and attempts.

A source names the service (for its sentences) and the settings that set its bounds; each
response is read as it arrives, refused past the size cap, and the whole fetch (every page)
ends at one deadline however slowly a server answers, even one byte at a time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from training.errors import InputError, SourceError

_CHUNK = 64 * 1024
_USER_AGENT = "doppeltweet"


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

    ``reading`` completes "Reading … took longer than" (``the Bluesky feed``); the two setting
    names are quoted in the sentences that refuse a response or a fetch over its bound.
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
        size_setting: str,
        deadline_setting: str,
    ) -> None:
        if not timeout > 0:
            raise InputError(f"The {service} request timeout must be positive, not {timeout}.")
        if not max_response_bytes > 0 or not deadline_s > 0:
            raise InputError(f"The {service} response size and fetch deadline must be positive.")
        self.service = service
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.deadline_s = deadline_s
        self.reading = reading
        self.size_setting = size_setting
        self.deadline_setting = deadline_setting
        self._session = session if session is not None else requests.Session()
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

    def get(self, url: str, params: dict[str, str], *, where: str) -> Answer:
        """One GET, read in full within the bounds; ``where`` names the server in sentences."""
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
        except requests.ConnectionError:
            raise SourceError(
                f"Could not reach {self.service} at {where}; check the connection."
            ) from None
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
