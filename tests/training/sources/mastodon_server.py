"""A loopback Mastodon server for tests: the public API's lookup and statuses endpoints, serving
synthetic accounts and statuses built from the documented structure (never recorded traffic)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ACCOUNT_ID = "109302"
SERVER = "social.example"
LINK = (
    '<a href="https://example.com/a/very/long/path" rel="nofollow noopener" target="_blank">'
    '<span class="invisible">https://</span><span class="ellipsis">example.com/a/ve</span>'
    '<span class="invisible">ry/long/path</span></a>'
)
MENTION = (
    '<span class="h-card"><a href="https://social.example/@bob" class="u-url mention">'
    "@<span>bob</span></a></span>"
)

#: (status, headers, body) answered for one request.
Reply = tuple[int, dict[str, str], bytes]


def account(username: str = "alice", ident: str = ACCOUNT_ID) -> dict[str, Any]:
    """An ``Account`` entity as ``/api/v1/accounts/lookup`` returns it."""
    return {
        "id": ident,
        "username": username,
        "acct": username,
        "display_name": username.title(),
        "locked": False,
        "bot": False,
        "url": f"https://{SERVER}/@{username}",
        "statuses_count": 0,
    }


def status(
    n: int,
    content: str,
    *,
    visibility: str = "public",
    spoiler_text: str = "",
    sensitive: bool = False,
    reply: bool = False,
    reblog: dict[str, Any] | None = None,
    owner: str = ACCOUNT_ID,
) -> dict[str, Any]:
    """A ``Status`` entity as ``/api/v1/accounts/:id/statuses`` returns it (bigger ``n``: newer)."""
    return {
        "id": str(110000000000000000 + n),
        "created_at": f"2024-03-{1 + n % 28:02d}T{n % 24:02d}:00:00.000Z",
        "in_reply_to_id": "109999" if reply else None,
        "in_reply_to_account_id": "42" if reply else None,
        "sensitive": sensitive,
        "spoiler_text": spoiler_text,
        "visibility": visibility,
        "language": "en",
        "uri": f"https://{SERVER}/users/alice/statuses/{n}",
        "url": f"https://{SERVER}/@alice/{n}",
        "content": "" if reblog else content,
        "reblog": reblog,
        "account": account(ident=owner),
        "media_attachments": [],
        "mentions": [],
        "tags": [],
    }


def as_json(body: object, status_code: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status_code, headers or {}, json.dumps(body).encode()


@dataclass
class Timeline:
    """An account's statuses, newest first, served 40 (or ``limit``) a page by ``max_id``."""

    statuses: list[dict[str, Any]] = field(default_factory=list)
    username: str = "alice"

    def route(self, path: str, query: dict[str, str]) -> Reply:
        if path == "/api/v1/accounts/lookup":
            if query.get("acct", "").lower() != self.username:
                return as_json({"error": "Record not found"}, 404)
            return as_json(account(self.username))
        if path == f"/api/v1/accounts/{ACCOUNT_ID}/statuses":
            older = self.statuses
            if "max_id" in query:
                older = [s for s in older if int(s["id"]) < int(query["max_id"])]
            return as_json(older[: min(40, int(query.get("limit", "20")))])
        return as_json({"error": "Record not found"}, 404)


class MastodonServer:
    """Serves ``route(path, query)`` on 127.0.0.1; every request's path and query is recorded.

    ``drip`` sends the body a byte at a time (``drip`` seconds apart, at most 200 bytes) to
    test the overall deadline.
    """

    def __init__(self, route: Callable[[str, dict[str, str]], Reply]) -> None:
        self.route = route
        self.requests: list[tuple[str, dict[str, str]]] = []
        #: The Host header of every request.
        self.hosts: list[str | None] = []
        self.drip = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                server.requests.append((url.path, query))
                server.hosts.append(self.headers.get("Host"))
                code, headers, body = server.route(url.path, query)
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if server.drip:
                        for byte in body[:200]:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(server.drip)
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (the deadline test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> MastodonServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def status_queries(self) -> list[dict[str, str]]:
        return [q for p, q in self.requests if re.fullmatch(r"/api/v1/accounts/\d+/statuses", p)]


def mixed_timeline() -> Timeline:
    """Newest first: a reply with a mention, a boost, a DM, a followers-only post, a content
    warning, a sensitive post, an unlisted post with a split link, a public post."""
    return Timeline(
        [
            status(8, f"<p>{MENTION} thanks for the tip</p><p>second<br>line</p>", reply=True),
            status(7, "", reblog=status(1, "<p>someone else's words</p>", owner="555")),
            status(6, "<p>SECRET direct message to bob</p>", visibility="direct"),
            status(5, "<p>SECRET followers only thoughts</p>", visibility="private"),
            status(4, "<p>behind a warning</p>", spoiler_text="spoilers"),
            status(3, "<p>a sensitive picture</p>", sensitive=True),
            status(2, f"<p>unlisted with a link {LINK}</p>", visibility="unlisted"),
            status(1, "<p>public post about &amp; tea time today</p>"),
        ]
    )
