"""``doppeltweet data``: the table, samples, --json, --out, and refusing too little data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from training import cli, config
from training.cli import main
from training.config import TrainingSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def offline_settings(monkeypatch) -> None:
    """Settings from nothing but defaults: no .env, no token from the environment.

    Only the ``data`` subcommand is registered, so these tests pin down this command alone.
    """
    monkeypatch.setattr(config, "get_settings", lambda: TrainingSettings(_env_file=None))
    monkeypatch.setattr(cli, "COMMANDS", ("data",))
    for name in ("X_BEARER_TOKEN", "DOPPELTWEET_X_BEARER_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def write_csv(path: Path, tweets_by_user: dict[str, int], *, chars: int = 100) -> Path:
    """A CSV with ``n`` tweets of ``chars`` characters per user, plus a retweet and a link."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["created_at", "text", "user"])
        for user, n in tweets_by_user.items():
            for i in range(n):
                head = f"{user} tweet {i:04d} [bold]markup[/bold] &amp; :smile: "
                # "&amp;" cleans to "&": 4 characters more raw gives exactly ``chars`` cleaned
                text = head.ljust(chars + 4, "z")
                writer.writerow([f"10/16/17 {i // 60:02d}:{i % 60:02d}", text, user])
            writer.writerow(["10/17/17 00:00", f"RT @{user}: a retweet", user])
            writer.writerow(["10/17/17 00:01", "https://t.co/onlyalink", user])
    return path


def test_data_prints_the_table_and_cleaned_samples(tmp_path, capsys) -> None:
    path = write_csv(tmp_path / "t.csv", {"jack": 450})
    assert main(["data", "@Jack", "--from", str(path), "--samples", "2"]) == 0
    out, err = capsys.readouterr()
    for label, value in [
        ("Tweets downloaded", "452"),
        ("Retweets", "1"),
        ("Short tweets", "1"),
        ("Tweets kept", "450"),
    ]:
        line = next(row for row in out.splitlines() if label in row)
        assert value in line
    # tweets are shown as written (no rich markup or emoji codes applied), entities decoded
    assert "jack tweet 0449 [bold]markup[/bold] & :smile: z" in out
    assert "jack tweet 0448" in out and "jack tweet 0447" not in out
    assert err == ""


def test_data_json_prints_only_the_table(tmp_path, capsys) -> None:
    path = write_csv(tmp_path / "t.csv", {"jack": 450, "bob": 500})
    assert main(["data", "@jack", "@bob", "--from", str(path), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == {
        "bob": {"tweets_downloaded": 502, "retweets": 1, "short_tweets": 1, "tweets_kept": 500},
        "jack": {"tweets_downloaded": 452, "retweets": 1, "short_tweets": 1, "tweets_kept": 450},
    }


def test_data_warns_below_40000_characters_on_stderr(tmp_path, capsys) -> None:
    path = write_csv(tmp_path / "t.csv", {"jack": 100})
    assert main(["data", "@jack", "--from", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["jack"]["tweets_kept"] == 100
    assert err.startswith("warning: Only 10,000 characters")


def test_data_out_writes_the_cleaned_dataset(tmp_path, capsys) -> None:
    path = write_csv(tmp_path / "t.csv", {"jack": 450})
    out_file = tmp_path / "clean.jsonl"
    assert main(["data", "@jack", "--from", str(path), "--out", str(out_file), "--json"]) == 0
    records = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 450
    assert records[0]["handle"] == "jack" and records[0]["text"].startswith("jack tweet 0449 ")
    assert "&amp;" not in out_file.read_text(encoding="utf-8")
    assert json.loads(capsys.readouterr().out)["jack"]["tweets_kept"] == 450


def test_too_little_data_shows_the_table_then_fails_writing_nothing(tmp_path, capsys) -> None:
    path = write_csv(tmp_path / "t.csv", {"jack": 59})  # 5,900 characters kept
    out_file = tmp_path / "clean.jsonl"
    code = main(["data", "@jack", "--from", str(path), "--out", str(out_file)])
    out, err = capsys.readouterr()
    assert code != 0
    assert "Tweets kept" in out and "59" in out
    assert err.strip() == (
        "error: Only 5,900 characters of tweets by @jack are left after cleaning, and a model "
        "needs at least 6,000: add more tweets, such as your full X archive."
    )
    assert not out_file.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_too_little_data_with_json_still_prints_the_table(tmp_path, capsys) -> None:
    path = write_csv(tmp_path / "t.csv", {"jack": 10})
    assert main(["data", "@jack", "--from", str(path), "--json"]) != 0
    out, err = capsys.readouterr()
    assert json.loads(out)["jack"]["tweets_kept"] == 10
    assert err.startswith("error: Only 1,000 characters")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "@not a handle!", "--from", "x.csv"], "is not an X handle"),
        (["data", "@jack"], "Say where the tweets of @jack come from"),
        (
            ["data", "@jack", "--from", "missing.csv"],
            "neither --api, --bluesky, --mastodon nor an existing",
        ),
        (["data", "@jack", "--api"], "Set X_BEARER_TOKEN"),
        (["data", "@a", "@b", "@c", "@d", "--from", "x.csv"], "at most 3 handles"),
        (["data", "@a", "@b", "--from", "x.csv", "--from", "y.csv", "--from", "z.csv"], "not 3"),
        (["data", "@jack", "--from", "t.csv", "--out", "."], "is a folder"),
        (["data", "@jack", "--from", "t.csv", "--out", "no/such/dir/x.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(
    tmp_path, monkeypatch, capsys, argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "t.csv", {"jack": 100})
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_bluesky_flag_reads_plain_handles_as_bluesky_handles(monkeypatch) -> None:
    from training import pipeline

    seen = {}

    def fake_collect(handles, specs, settings):
        seen["handles"], seen["specs"] = handles, specs
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "collect", fake_collect)
    with pytest.raises(SystemExit):
        main(["data", "@alice.bsky.social", "--bluesky"])
    assert [(h.name, h.platform) for h in seen["handles"]] == [("alice.bsky.social", "bluesky")]
    assert seen["specs"] == ["bluesky"]


def test_sources_are_mutually_exclusive(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["data", "@jack", "--api", "--bluesky"])
    assert caught.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_python_m_training_data_runs_end_to_end(tmp_path) -> None:
    path = write_csv(tmp_path / "t.csv", {"jack": 70})
    result = subprocess.run(
        [sys.executable, "-m", "training", "data", "@jack", "--from", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jack"]["tweets_kept"] == 70


def test_each_from_belongs_to_the_handle_typed_at_its_position(tmp_path, capsys) -> None:
    zed = write_csv(tmp_path / "zed.csv", {"zed": 80})
    amy = write_csv(tmp_path / "amy.csv", {"amy": 90})
    assert main(["data", "@zed", "@amy", "--from", str(zed), "--from", str(amy), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert list(table) == ["amy", "zed"]
    assert table["amy"]["tweets_kept"] == 90 and table["zed"]["tweets_kept"] == 80


FIVETHIRTYEIGHT = ROOT / "tests" / "fixtures" / "fivethirtyeight"


def test_fivethirtyeight_csvs_come_out_clean_end_to_end(tmp_path, capsys) -> None:
    out_file = tmp_path / "both.jsonl"
    argv = ["data", "@realDonaldTrump", "@BarackObama", "--json", "--out", str(out_file)]
    argv += ["--from", str(FIVETHIRTYEIGHT / "realDonaldTrump.csv")]
    argv += ["--from", str(FIVETHIRTYEIGHT / "BarackObama.csv")]
    assert main(argv) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["barackobama"]["tweets_downloaded"] == 3207
    assert table["realdonaldtrump"]["tweets_downloaded"] == 3232
    for counts in table.values():
        assert counts["tweets_downloaded"] == (
            counts["retweets"] + counts["short_tweets"] + counts["tweets_kept"]
        )
        assert counts["retweets"] > 300  # "RT @" rows are retweets in a CSV
    text = out_file.read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == sum(c["tweets_kept"] for c in table.values())
    assert "Michelle & I are praying" in text
    assert not any(m in text for m in ("‰Û", "Ã", "&amp;", "http://", "https://"))


def write_archive(path: Path, owner: str, texts: list[str]) -> Path:
    """A minimal X archive zip as X delivers it: data/tweets.js and data/account.js."""
    import zipfile
    from datetime import UTC, datetime, timedelta

    start = datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)
    tweets = [
        {
            "tweet": {
                "id_str": str(1000 + i),
                "full_text": text,
                "created_at": (start + timedelta(minutes=i)).strftime("%a %b %d %H:%M:%S %z %Y"),
                "retweeted": False,
            }
        }
        for i, text in enumerate(texts)
    ]
    account = [{"account": {"username": owner, "accountId": "1"}}]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", "window.YTD.tweets.part0 = " + json.dumps(tweets))
        archive.writestr("data/account.js", "window.YTD.account.part0 = " + json.dumps(account))
    return path


def test_an_x_archive_zip_end_to_end(tmp_path, capsys) -> None:
    texts = [f"archived thought {i:03d} about coffee &amp; code " + "z" * 60 for i in range(100)]
    texts += ["RT @friend: shared words here", "@bob @alice thanks! https://t.co/x"]
    path = write_archive(tmp_path / "twitter-archive.zip", "Jack", texts)
    out_file = tmp_path / "jack.jsonl"
    assert main(["data", "@jack", "--from", str(path), "--json", "--out", str(out_file)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "jack": {"tweets_downloaded": 102, "retweets": 1, "short_tweets": 1, "tweets_kept": 100}
    }
    first = json.loads(out_file.read_text(encoding="utf-8").splitlines()[0])
    assert first == {
        "handle": "jack",
        "text": "archived thought 099 about coffee & code " + "z" * 60,
    }


def test_an_archive_of_someone_else_is_one_sentence(tmp_path, capsys) -> None:
    path = write_archive(tmp_path / "a.zip", "jack", ["one two three four"] * 3)
    assert main(["data", "@bob", "--from", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "@jack" in err and err.count("\n") == 1


def test_bluesky_end_to_end_against_a_loopback_appview(tmp_path, monkeypatch, capsys) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def item(n: int, *, repost: bool = False) -> dict:
        post = {
            "uri": f"at://did:plc:alice/app.bsky.feed.post/{n:013d}",
            "cid": f"bafyrei{n:052d}",
            "author": {"did": "did:plc:alice", "handle": "alice.bsky.social"},
            "record": {
                "$type": "app.bsky.feed.post",
                "text": f"skeet {n:03d} on the open social web, with more words " + "z" * 70,
                "createdAt": f"2024-11-25T08:{59 - n % 60:02d}:40.311Z",
            },
            "indexedAt": "2024-11-25T08:12:40.311Z",
        }
        entry: dict = {"post": post}
        if repost:
            entry["reason"] = {
                "$type": "app.bsky.feed.defs#reasonRepost",
                "by": {"did": "did:plc:alice", "handle": "alice.bsky.social"},
                "indexedAt": "2024-11-25T09:00:00.000Z",
            }
        return entry

    feed = json.dumps({"feed": [item(n, repost=n < 3) for n in range(60)]}).encode()
    actors: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            from urllib.parse import parse_qs, urlsplit

            actors.extend(parse_qs(urlsplit(self.path).query).get("actor", []))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(feed)))
            self.end_headers()
            self.wfile.write(feed)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setattr(
            config,
            "get_settings",
            lambda: TrainingSettings(
                _env_file=None, bluesky_api_base=base, allow_private_servers=True
            ),
        )
        assert main(["data", "@alice.bsky.social", "--bluesky", "--json"]) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert actors and set(actors) == {"alice.bsky.social"}
    assert json.loads(capsys.readouterr().out) == {
        "alice.bsky.social": {
            "tweets_downloaded": 60,
            "retweets": 3,
            "short_tweets": 0,
            "tweets_kept": 57,
        }
    }


def test_data_reads_a_plain_text_file_one_post_per_line(tmp_path, capsys) -> None:
    path = tmp_path / "posts.txt"
    lines = [f"Dear diary, today was day number {i} of the trip" for i in range(300)]
    lines += ["RT @bob: not mine", "too short"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["data", "@jack", "--from", str(path), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table == {
        "jack": {"tweets_downloaded": 302, "retweets": 1, "short_tweets": 1, "tweets_kept": 300}
    }
