"""The ``data`` step: from "where the tweets are" to a cleaned :class:`DataTable`.

A source spec is what the user named: ``"api"`` (the paid X API), ``"bluesky"`` (the public
Bluesky feed), ``"mastodon"`` (the public Mastodon API of the handle's server) or a path to an X
archive (zip, ``data/`` folder, ``.js`` file), a Mastodon archive (zip or ``.tar.gz``), a
CSV/JSONL file or a plain-text file (one post per line). Bluesky and Mastodon handles need no
spec: each reads its own network by default.
The source classes are imported only when used, so reading a CSV never imports tweepy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.cleaning import DataTable, clean_handle
from training.config import TrainingSettings
from training.errors import InputError
from training.handles import BLUESKY_PREFIX, PLATFORM_NAMES, Handle, parse_handle, parse_handles
from training.sources.base import RawTweet, TweetSource, at_boundary

API_SPEC = "api"
BLUESKY_SPEC = "bluesky"
MASTODON_SPEC = "mastodon"
#: The specs that name a network rather than a file.
NETWORK_SPECS = frozenset({API_SPEC, BLUESKY_SPEC, MASTODON_SPEC})
_FLAG_OF = {"x": "--api", "bluesky": "--bluesky", "mastodon": "--mastodon"}
_MB = 1024 * 1024


def open_source(spec: str, handle: Handle, settings: TrainingSettings) -> TweetSource:
    """The tweet source a spec names, checked enough that fetching can only fail on its contents."""
    if spec == API_SPEC:
        if handle.platform != "x":
            raise InputError(
                f"{handle} is a {PLATFORM_NAMES[handle.platform]} handle, so use "
                f"{_FLAG_OF[handle.platform]} rather than --api."
            )
        if settings.x_bearer_token is None or not settings.x_bearer_token.get_secret_value():
            raise InputError(
                "Set X_BEARER_TOKEN to use the X API, which is pay-per-use (about $0.005 a post "
                "read, so roughly $16 for 3,200 tweets), or use your free X archive with --from."
            )
        from training.sources.xapi import XApiSource

        return XApiSource(settings.x_bearer_token.get_secret_value())
    if spec == BLUESKY_SPEC:
        if handle.platform != "bluesky":
            raise InputError(
                f"{handle} is {_a_handle(handle)}; name a Bluesky handle such as "
                "bluesky:alice.bsky.social."
            )
        from training.sources.bluesky import BlueskySource

        return BlueskySource(
            base_url=settings.bluesky_api_base,
            max_response_bytes=int(settings.bluesky_max_response_mb * _MB),
            deadline_s=settings.bluesky_deadline_s,
            allow_private_servers=settings.allow_private_servers,
        )
    if spec == MASTODON_SPEC:
        if handle.platform != "mastodon":
            raise InputError(
                f"{handle} is {_a_handle(handle)}; name a Mastodon handle such as "
                "mastodon:@alice@mastodon.social."
            )
        from training.sources.base import API_TWEET_CAP
        from training.sources.mastodon_api import MastodonApiSource

        return MastodonApiSource(
            base_url=settings.mastodon_api_base or None,
            limit=min(API_TWEET_CAP, settings.max_tweets),
            max_response_bytes=int(settings.mastodon_max_response_mb * _MB),
            deadline_s=settings.mastodon_deadline_s,
            allow_private_servers=settings.allow_private_servers,
        )
    return _open_path(spec, settings)


def _a_handle(handle: Handle) -> str:
    return (
        "an X handle" if handle.platform == "x" else f"a {PLATFORM_NAMES[handle.platform]} handle"
    )


def _open_path(spec: str, settings: TrainingSettings) -> TweetSource:
    path = Path(spec).expanduser()
    # The file's name, never its folder: the bot relays this sentence to Discord.
    shown = repr(path.name or spec.strip()[:40])
    if not spec.strip() or not path.exists():
        raise InputError(
            f"{shown} is neither --api, --bluesky, --mastodon nor an existing file or folder of "
            "tweets."
        )
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{shown} is not a regular file or folder.")
    from training.sources import archive

    max_file_bytes = int(settings.max_file_mb * _MB)
    from training.sources import mastodon_archive

    if path.is_file() and mastodon_archive.looks_like_mastodon_archive(path):
        return mastodon_archive.MastodonArchiveSource(
            path,
            max_file_bytes=max_file_bytes,
            max_uncompressed_bytes=int(settings.max_uncompressed_mb * _MB),
        )
    if archive.looks_like_archive(path):
        return archive.ArchiveSource(
            path,
            max_file_bytes=max_file_bytes,
            max_uncompressed_bytes=int(settings.max_uncompressed_mb * _MB),
            max_tweets=settings.max_tweets,
        )
    if path.is_dir():
        raise InputError(
            f"{shown} is a folder without an X archive's tweets.js or tweet.js in it or in data/."
        )
    from training.sources.formats import PLAIN_TEXT_SUFFIXES
    from training.sources.plaintext import PlainTextSource

    if path.suffix.lower() in PLAIN_TEXT_SUFFIXES:
        return PlainTextSource(path, max_file_bytes=max_file_bytes)
    from training.sources.tabular import TabularSource

    return TabularSource(path, max_file_bytes=max_file_bytes, max_tweets=settings.max_tweets)


def default_spec(handle: Handle) -> str | None:
    """The source a handle implies on its own: Bluesky handles read the public Bluesky feed,
    Mastodon handles their server's public API; X handles imply none (the X API is paid)."""
    return {"bluesky": BLUESKY_SPEC, "mastodon": MASTODON_SPEC}.get(handle.platform)


def pair_specs(handles: Sequence[Handle], specs: Sequence[str]) -> list[tuple[Handle, str]]:
    """Match sources to handles: one per handle, one shared by all, or each handle's default."""
    if len(specs) == len(handles):
        return list(zip(handles, specs, strict=True))
    if len(specs) == 1:
        return [(handle, specs[0]) for handle in handles]
    if not specs:
        pairs = [(handle, default_spec(handle)) for handle in handles]
        missing = [str(handle) for handle, spec in pairs if spec is None]
        if missing:
            raise InputError(
                f"Say where the tweets of {', '.join(missing)} come from: --from PATH "
                "(an X or Mastodon archive, CSV or JSONL), --api, --bluesky or --mastodon."
            )
        return [(handle, spec) for handle, spec in pairs if spec is not None]
    raise InputError(
        f"Give one source for all handles or one per handle, not {len(specs)} for "
        f"{len(handles)} handles."
    )


def handles_and_specs(
    texts: Sequence[str],
    *,
    paths: Sequence[str] = (),
    api: bool = False,
    bluesky: bool = False,
    mastodon: bool = False,
) -> tuple[list[Handle], list[str]]:
    """Turn the command line's handles and ``--from``/``--api``/``--bluesky``/``--mastodon`` into
    collect's input.

    The handles stay in the order typed, because the n-th ``--from`` belongs to the n-th handle;
    with ``--bluesky`` a plain ``@alice.bsky.social`` is read as a Bluesky handle. A Mastodon
    handle (``@alice@mastodon.social``) needs no prefix, so ``--mastodon`` only names the source.
    """
    if bluesky:
        texts = [
            t if t.strip().lower().startswith(BLUESKY_PREFIX) else BLUESKY_PREFIX + t.strip()
            for t in texts
        ]
    parse_handles(texts)  # 1–3 distinct valid handles, or one sentence saying why not
    specs = (
        [BLUESKY_SPEC]
        if bluesky
        else [MASTODON_SPEC]
        if mastodon
        else [API_SPEC]
        if api
        else list(paths)
    )
    return [parse_handle(text) for text in texts], specs


def collect(
    handles: Sequence[Handle], specs: Sequence[str], settings: TrainingSettings
) -> DataTable:
    """Fetch and clean every handle's tweets; the gates are left to the caller (:meth:`check`).

    With one spec per handle, ``specs[i]`` belongs to ``handles[i]``: pass the handles in the order
    the user typed them, not sorted (the table sorts its columns itself).
    """
    pairs = pair_specs(handles, specs)
    opened: dict[tuple[str, str], TweetSource] = {}
    columns = []
    for handle, spec in pairs:
        # A file shared by several handles (one CSV with a user column) is opened once.
        key = (spec, handle.platform) if spec in NETWORK_SPECS else (spec, "")
        if key not in opened:
            opened[key] = open_source(spec, handle, settings)
        source = opened[key]
        tweets, cut = fetch_checked(source, handle, settings)
        columns.append(clean_handle(handle, tweets, cut=cut, skipped=skipped_counts(source)))
    return DataTable(columns)


def skipped_counts(source: TweetSource) -> dict[str, int] | None:
    """The posts a source read but left out in its last fetch, by reason (``content_warned``,
    ``not_public``), for sources that leave posts out by rule (both Mastodon sources); else None.
    """
    counts = getattr(source, "skip_counts", None)
    return counts().as_dict() if callable(counts) else None


def fetch_checked(
    source: TweetSource, handle: Handle, settings: TrainingSettings
) -> tuple[list[RawTweet], int]:
    """A source's posts through the source boundary, and how many were cut to 25,000 characters.

    Capped in number, texts repaired and capped in length.

    Sources cap what they read themselves (so a hostile input never costs the memory); this is
    the same bound for any source that does not, and the text repair every source gets
    (:func:`training.sources.base.at_boundary`: lone surrogates and control characters).
    """
    tweets = source.fetch(handle)
    if len(tweets) > settings.max_tweets:
        raise InputError(
            f"The input for {handle} holds more than {settings.max_tweets:,} posts, the limit "
            "set by DOPPELTWEET_MAX_TWEETS."
        )
    return at_boundary(tweets)
