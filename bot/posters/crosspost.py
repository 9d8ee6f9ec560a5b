"""One text to several networks: cut to fit them all, then posted to each.

Generated text may name real accounts, so what goes out has its @mentions neutralised and the
AI label added; one network failing never keeps the others from posting.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.posters.base import Poster, PostError, fit_text, with_label
from training.textrules import neutralise_mentions


async def fit_for(text: str, posters: list[Poster], *, ai_label: bool) -> str:
    """``text`` cut so that, neutralised and labelled, it fits every poster's limit."""
    limits = []
    for poster in posters:
        limit = await poster.max_length()

        def counted(candidate: str, poster: Poster = poster) -> int:
            return poster.length(neutralise_mentions(candidate))

        limits.append((counted, limit))
    return fit_text(text, limits, ai_label=ai_label)


async def post_everywhere(
    text: str, posters: list[Poster], *, ai_label: bool
) -> tuple[dict[str, str], list[str], list[str]]:
    """Post ``text`` (already fitted) to each network with @mentions neutralised and the label.

    Returns where each network shows the post (by network key), the refusals that must stop
    the caller from trying again as it is (credentials, rate limit, content), and the passing
    problems (outages).
    """
    public_text = with_label(neutralise_mentions(text), ai_label=ai_label)
    posted_to: dict[str, str] = {}
    refused: list[str] = []
    transient: list[str] = []
    for poster in posters:
        try:
            posted = await poster.post(public_text)
        except PostError as error:
            (refused if error.pauses else transient).append(str(error))
            continue
        posted_to[poster.key] = posted.url or posted.id
    return posted_to, refused, transient


def x_post_id(posted_to: Mapping[str, str]) -> str | None:
    """The X post's id (what the ``x_post_id`` column holds) from its address."""
    where = posted_to.get("x")
    return where.rsplit("/", 1)[-1] if where else None
