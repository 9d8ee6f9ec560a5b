"""Bounded work on hostile and huge inputs: long-post matching, zip bombs, streamed CSV.

Prints one JSON object (``hostile_input``):

* ``note_matching`` — an X archive's long posts (note-tweets) matched to their truncated tweets
  by time, 100,000 tweets + 100,000 notes (``--quick``: 5,000 + 5,000): the sorted, binary-search
  matcher's seconds, and the old all-notes-per-tweet matcher's seconds on a small sample with
  its quadratic extrapolation to the same size.
* ``archive_fetch`` — the whole ``ArchiveSource.fetch`` of a zip with those tweets and notes.
* ``zip_bomb`` — how long refusing a zip bomb of many small members takes (no member read).
* ``csv_stream`` — peak Python memory (tracemalloc) reading a CSV, against the file's size.

The machine is shared: ``machine.load_avg_1m`` is recorded next to the numbers and
``machine.contended`` is true when the load (before or after) was above the core count.
The last full run's output is kept in ``benchmarks/results/hostile_input.json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import base_parser
from training.handles import parse_handle
from training.sources.archive import NOTE_MATCH_SECONDS, ArchiveSource, _expand_long_posts
from training.sources.base import RawTweet
from training.sources.tabular import TabularSource

MB = 1024 * 1024
START = datetime(2020, 1, 1, tzinfo=UTC)


def _posts(count: int) -> tuple[list[RawTweet], list[tuple[datetime, str]]]:
    tweets, notes = [], []
    for number in range(count):
        when = START + timedelta(seconds=3 * number)
        full = f"long post {number:07d} that goes on and on " + "and on " * 60
        tweets.append(RawTweet(str(number), when, full[:270] + "…", False, False, "x-archive"))
        notes.append((when + timedelta(seconds=1), full))
    return tweets, notes


def _old_matching(tweets: list[RawTweet], notes: list[tuple[datetime, str]]) -> int:
    """The matcher this replaced: every note's time compared for every tweet (for the figure)."""
    found = 0
    for tweet in tweets:
        assert tweet.created_at is not None
        near = [
            text
            for when, text in notes
            if abs((when - tweet.created_at).total_seconds()) <= NOTE_MATCH_SECONDS
        ]
        found += bool(near)
    return found


def note_matching(count: int, sample: int) -> dict[str, Any]:
    tweets, notes = _posts(count)
    t0 = time.perf_counter()
    expanded = _expand_long_posts(tweets, notes)
    new_s = time.perf_counter() - t0
    matched = sum(1 for before, after in zip(tweets, expanded, strict=True) if before is not after)
    small_tweets, small_notes = _posts(sample)
    t0 = time.perf_counter()
    _old_matching(small_tweets, small_notes)
    old_small_s = time.perf_counter() - t0
    return {
        "tweets": count,
        "notes": count,
        "matched": matched,
        "sorted_matcher_s": round(new_s, 3),
        "old_matcher_sample": sample,
        "old_matcher_sample_s": round(old_small_s, 3),
        "old_matcher_extrapolated_s": round(old_small_s * (count / sample) ** 2, 1),
    }


def archive_fetch(count: int, workdir: Path) -> dict[str, Any]:
    tweets, notes = _posts(count)
    entries = [
        {
            "tweet": {
                "id_str": t.id,
                "full_text": t.text,
                "created_at": t.created_at.strftime("%a %b %d %H:%M:%S %z %Y"),
            }
        }
        for t in tweets
        if t.created_at is not None
    ]
    note_entries = [
        {"noteTweet": {"createdAt": when.isoformat(), "core": {"text": text}}}
        for when, text in notes
    ]
    path = workdir / "archive.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", "window.YTD.tweets.part0 = " + json.dumps(entries))
        archive.writestr(
            "data/note-tweet.js", "window.YTD.note_tweet.part0 = " + json.dumps(note_entries)
        )
    source = ArchiveSource(path, max_file_bytes=2048 * MB, max_uncompressed_bytes=1024 * MB)
    t0 = time.perf_counter()
    fetched = source.fetch(parse_handle("@jack"))
    seconds = time.perf_counter() - t0
    return {
        "zip_mb": round(path.stat().st_size / MB, 2),
        "posts": len(fetched),
        "expanded": sum(1 for t in fetched if not t.text.endswith("…")),
        "fetch_s": round(seconds, 3),
    }


def zip_bomb(workdir: Path) -> dict[str, Any]:
    part = b"window.YTD.tweets.part0 = [" + b" " * (900 * 1024) + b"]"
    path = workdir / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        for number in range(1, 41):
            bomb.writestr(f"data/tweets-part{number}.js", part)
    source = ArchiveSource(path, max_file_bytes=2048 * MB, max_uncompressed_bytes=1024 * MB)
    t0 = time.perf_counter()
    try:
        source.fetch(parse_handle("@jack"))
        refused = False
    except Exception as error:  # the InputError sentence is the expected outcome
        refused = "zip bomb" in str(error)
    return {
        "zip_kb": round(path.stat().st_size / 1024, 1),
        "would_inflate_mb": round(40 * len(part) / MB, 1),
        "refused": refused,
        "refuse_s": round(time.perf_counter() - t0, 4),
    }


def csv_stream(rows: int, workdir: Path) -> dict[str, Any]:
    path = workdir / "big.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "created_at", "text"])
    for number in range(rows):
        writer.writerow([number, "2024-01-01", f"post {number} " + "with some words " * 8])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    del buffer
    tracemalloc.start()
    t0 = time.perf_counter()
    tweets = TabularSource(path, max_file_bytes=2048 * MB).fetch(parse_handle("@jack"))
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "file_mb": round(path.stat().st_size / MB, 1),
        "rows": len(tweets),
        "peak_python_mb": round(peak / MB, 1),
        "seconds": round(seconds, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    args = parser.parse_args(list(argv) if argv is not None else None)
    count = 5_000 if args.quick else 100_000
    sample = 500 if args.quick else 3_000
    rows = 20_000 if args.quick else 500_000
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-hostile-", dir=args.workdir) as scratch:
        workdir = Path(scratch)
        result = {
            "machine": {
                "load_avg_1m": round(load, 2),
                "cores": cores,
                "contended": load > cores,
            },
            "quick": args.quick,
            "note_matching": note_matching(count, sample),
            "archive_fetch": archive_fetch(count, workdir),
            "zip_bomb": zip_bomb(workdir),
            "csv_stream": csv_stream(rows, workdir),
        }
    after = os.getloadavg()[0]
    result["machine"]["load_avg_1m_after"] = round(after, 2)
    result["machine"]["contended"] = max(load, after) > cores
    print(json.dumps({"hostile_input": result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
