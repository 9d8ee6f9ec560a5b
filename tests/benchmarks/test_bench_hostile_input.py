"""The hostile-input benchmark runs in its minimal mode and reports what the README cites.

Timings are never asserted (the machine is shared); what is checked is that the work was done:
every long post matched, the bomb refused, every CSV row read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_hostile_input


def test_quick_run_reports_matching_bomb_and_streaming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_hostile_input.main(["--quick", "--workdir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)["hostile_input"]
    assert "load_avg_1m" in out["machine"] and "contended" in out["machine"]
    matching = out["note_matching"]
    assert matching["matched"] == matching["tweets"] == 5000
    assert out["archive_fetch"]["expanded"] == out["archive_fetch"]["posts"] == 5000
    assert out["zip_bomb"]["refused"] is True
    assert out["csv_stream"]["rows"] == 20_000
