"""What both Mastodon sources (the archive and the public API) share: which posts may be read,
which are left out for a content warning, and Mastodon's HTML as the text a reader sees.

Only public and unlisted posts are ever imported; followers-only posts and direct messages
never are. Posts behind a content warning (or marked sensitive) are left out by default. Both
kinds of left-out post are counted per reason in :class:`SkipCounts`, which the data table shows.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser

#: The visibilities of the API's statuses that may be imported (``private`` is followers-only).
READABLE_VISIBILITIES = frozenset({"public", "unlisted"})


@dataclass
class SkipCounts:
    """Posts a Mastodon source read but left out, by reason (rows of the data table)."""

    #: Behind a content warning (``summary`` / ``spoiler_text``) or marked sensitive.
    content_warned: int = 0
    #: Followers-only or direct: never imported.
    not_public: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts keyed as the data table's ``--json`` keys them."""
        return {"content_warned": self.content_warned, "not_public": self.not_public}


def is_content_warned(warning: object, sensitive: object) -> bool:
    """A post with a content warning (any non-empty text) or the sensitive flag set."""
    return (isinstance(warning, str) and bool(warning.strip())) or sensitive is True


class _TextParser(HTMLParser):
    """Mastodon HTML to text: paragraphs and breaks become newlines, ``invisible`` spans of links
    are kept (they hold the scheme and the rest of the URL), the ``ellipsis`` span loses nothing."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.paragraphs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p":
            if self.paragraphs:
                self.parts.append("\n\n")
            self.paragraphs += 1

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(content: str) -> str:
    """The text a reader sees, with full URLs and ``@user`` mentions; entities re-escaped for
    cleaning (which decodes ``&amp;``, ``&lt;``, ``&gt;`` as it does for tweets)."""
    parser = _TextParser()
    parser.feed(content)
    parser.close()
    text = "".join(parser.parts).replace("\u00a0", " ")
    return html.escape(re.sub(r"[ \t]+\n", "\n", text).strip(), quote=False)


def parse_time(value: object) -> datetime | None:
    """An ActivityPub / Mastodon API timestamp as an aware datetime; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
