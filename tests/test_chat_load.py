"""The chat under load with faults, small: `benchmarks/chat_load.py --quick`.

200 clients over 20 rooms on `python -m microasgi run examples.chat:app --workers 2`,
one redis-server (AOF), all joining at once; then Redis is killed and restarted, then a
worker is killed. Every receiver must have every message of its room exactly once, in
order, and none of another room's; clients that were away get what they missed replayed.
Only correctness is asserted here: the timings and memory are the benchmark's to report
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import ROOT, require

pytest.importorskip("redis")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

pytestmark = pytest.mark.integration


def test_the_chat_loses_nothing_under_load_and_faults(tmp_path: Path) -> None:
    require(
        shutil.which("redis-server") is not None,
        "redis-server",
        "install it (apt-get install redis-server)",
    )
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "chat_load.py"), "--quick"]
    run = subprocess.run(
        [*command, "--json", str(report_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(report_path.read_text())

    assert report["storm"]["joined"] == report["storm"]["clients"] == 200
    for name in ("steady", "redis restart", "worker kill"):
        phase = report["phases"][name]
        assert phase["published"] > 0, (name, phase)
        assert (phase["lost"], phase["duplicated"], phase["reordered"]) == (0, 0, 0), name
    # The clients on the killed worker came back and got what was said meanwhile.
    assert report["resume"]["clients_that_reconnected"] > 0
    assert report["phases"]["worker kill"]["replayed_to_returning_clients"] > 0
    totals = report["totals"]
    assert totals["settled"]
    assert totals["leaked"] == totals["inconsistent_numbers"] == 0
    assert totals["refused_but_delivered"] == totals["unpublished_echoes"] == 0
    assert totals["notices"] == 0  # Redis kept its data (AOF): no gap, no reset
    assert totals["epochs_per_room"] == 1
    assert totals["server_log_tracebacks"] == 0, "\n\n".join(report["tracebacks"])
    assert report["concurrent_publishes"]["errors"] == 0
    assert report["fds"]["back_to_idle"], report["fds"]
