"""End to end: raw ASGI, microasgi and Starlette under real servers and a real load generator.

    .venv/bin/python benchmarks/bench_e2e.py                    # full run (about 25 min)
    .venv/bin/python benchmarks/bench_e2e.py --quick            # smoke run (about 2 min)
    .venv/bin/python benchmarks/bench_e2e.py --servers uvicorn --scenarios json --rounds 5

For each server (uvicorn with httptools and uvloop; hypercorn with uvloop; granian),
one process per app (benchmarks/e2e_apps.py), one worker each, all started before
the first round. `wrk` (Debian: ``apt-get install wrk``; the script installs it with
apt-get when it runs as root and finds none) loads one app at a time, `-t1 -c64`,
after a warm-up; the apps take turns in every round, in a different order each
round. For each run it records:

- requests per second, as wrk counted them (any non-2xx answer, socket error or
  timeout makes the run fail: no broken figure is printed);
- the server's CPU time per request: utime + stime of the server's processes
  (its workers included) from /proc, over the run, divided by the requests wrk
  counted. On a machine shared with other work this is far steadier than req/s.

Every figure is the median over the rounds, and ratios are against raw ASGI in
the same run (for the middleware rows, raw ASGI behind the same pure-ASGI
middleware).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from processes import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TICKS = os.sysconf("SC_CLK_TCK")

ORDER = {"items": [{"sku": f"SKU-{i:04d}", "price": i, "qty": 1} for i in range(24)]}
ORDER_BODY = json.dumps(ORDER)
HEADERS = {
    "user-agent": "bench-e2e/1.0",
    "accept": "application/json",
    "accept-language": "en",
    "cookie": "session=abc123; theme=dark",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    expect: str = ""


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("plaintext", "/plaintext", expect="Hello, World!"),
        Scenario("json", "/r0/items/42", expect='{"item_id":42}'),
        Scenario(
            "headers",
            "/search?q=shoes&page=2",
            headers=HEADERS,
            expect='{"q":"shoes","page":2,"agent":"bench-e2e/1.0","session":"abc123"}',
        ),
        Scenario(
            "post-1k",
            "/orders",
            method="POST",
            headers={"content-type": "application/json"},
            body=ORDER_BODY,
            expect='{"items":24,"total":276}',
        ),
    )
}

# (row label, app names to compare, the baseline); the apps are in benchmarks/e2e_apps.py.
VARIANTS = [
    ("", ["raw", "microasgi", "starlette"], "raw"),
    (" (drain)", ["microasgi", "microasgi_drain"], "microasgi"),
    (" + ASGI mw", ["raw_asgi_mw", "microasgi_asgi_mw", "starlette_asgi_mw"], "raw_asgi_mw"),
    (" + function mw", ["raw_asgi_mw", "microasgi_func_mw", "starlette_func_mw"], "raw_asgi_mw"),
]


def server_command(server: str, app: str, port: int) -> list[str]:
    python = sys.executable
    target = f"e2e_apps:{app}"
    if server == "uvicorn":
        return [
            python, "-m", "uvicorn", target, "--port", str(port), "--http", "httptools",
            "--loop", "uvloop", "--log-level", "warning", "--no-access-log", "--lifespan", "on",
        ]  # fmt: skip
    if server == "hypercorn":
        return [
            python, "-m", "hypercorn", target, "--bind", f"127.0.0.1:{port}",
            "--worker-class", "uvloop", "--log-level", "WARNING",
        ]  # fmt: skip
    return [
        python, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--loop", "uvloop", "--log-level", "warning",
        "--no-ws", target,
    ]  # fmt: skip


class ServerProcess:
    """One server serving one app, with its CPU time read from /proc."""

    def __init__(self, server: str, app: str) -> None:
        self.server = server
        self.app = app
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            server_command(server, app, self.port),
            cwd=HERE,
            env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.server} {self.app} exited:\n{self.output()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/plaintext", timeout=1)
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.server} {self.app} did not start:\n{self.output()}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server's process and its descendants (workers)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def cpu_seconds(self, pids: list[int]) -> float:
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / TICKS

    def check(self, scenario: Scenario) -> None:
        """The app answers the scenario right (status 200, the expected body)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{scenario.path}",
            data=scenario.body.encode() or None,
            headers=scenario.headers,
            method=scenario.method,
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
            status = response.status
        if status != 200 or json_or_text(body) != json_or_text(scenario.expect):
            raise SystemExit(f"{self.server} {self.app} {scenario.name}: {status} {body!r}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


def json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk with apt-get ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        found = shutil.which("wrk")
        if found is None:
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
            found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is needed: apt-get install wrk (Debian, Ubuntu)")
    return found


def wrk_script(scenario: Scenario, directory: Path) -> Path:
    lines = [f'wrk.method = "{scenario.method}"']
    for name, value in scenario.headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if scenario.body:
        lines.append(f"wrk.body = {json.dumps(scenario.body)}")
    path = directory / f"{scenario.name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Run:
    requests: int
    seconds: float
    cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6


def load(wrk: str, script: Path, url: str, seconds: float, connections: int) -> tuple[int, float]:
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script)]
    result = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    out = result.stdout
    found = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if found is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    problems = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if problems or (errors and any(int(n) for n in errors.groups())):
        raise SystemExit(f"errors under load at {url}:\n{out}")
    duration = float(found.group(2)) / (1000 if found.group(3) == "ms" else 1)
    return int(found.group(1)), duration


def measure(
    wrk: str, server: ServerProcess, scenario: Scenario, script: Path, args: argparse.Namespace
) -> Run:
    url = f"http://127.0.0.1:{server.port}{scenario.path}"
    load(wrk, script, url, args.warmup, args.connections)
    pids = server.pids()
    before = server.cpu_seconds(pids)
    requests, seconds = load(wrk, script, url, args.duration, args.connections)
    cpu = server.cpu_seconds(pids) - before
    return Run(requests, seconds, cpu)


@contextlib.contextmanager
def servers_for(server: str, apps: list[str]) -> Iterator[dict[str, ServerProcess]]:
    processes = {app: ServerProcess(server, app) for app in apps}
    try:
        for process in processes.values():
            process.wait_until_up()
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def run_server(server: str, args: argparse.Namespace, wrk: str, directory: Path) -> list[dict]:
    variants = [
        v
        for v in VARIANTS
        if (args.middleware or not v[0].startswith(" +")) and (args.drain or v[0] != " (drain)")
    ]
    apps = sorted({app for _, names, _ in variants for app in names})
    rows = []
    with servers_for(server, apps) as processes:
        results: dict[tuple[str, str], list[Run]] = {}
        for scenario_name in args.scenarios:
            scenario = SCENARIOS[scenario_name]
            for process in processes.values():
                process.check(scenario)
        for round_number in range(args.rounds):
            for scenario_name in args.scenarios:
                scenario = SCENARIOS[scenario_name]
                script = wrk_script(scenario, directory)
                turn = apps[round_number % len(apps) :] + apps[: round_number % len(apps)]
                for app in turn:
                    run = measure(wrk, processes[app], scenario, script, args)
                    results.setdefault((scenario_name, app), []).append(run)
            print(f"  {server}: round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    for scenario_name in args.scenarios:
        for label, names, baseline in variants:
            base = results[(scenario_name, baseline)]
            base_rps = statistics.median(r.rps for r in base)
            base_cpu = statistics.median(r.cpu_us for r in base)
            row: dict = {"server": server, "scenario": scenario_name + label, "apps": {}}
            for app in names:
                runs = results[(scenario_name, app)]
                rps = statistics.median(r.rps for r in runs)
                cpu = statistics.median(r.cpu_us for r in runs)
                row["apps"][app] = {
                    "rps": round(rps),
                    "cpu_us": round(cpu, 1),
                    "rps_ratio": round(rps / base_rps, 2),
                    "cpu_delta_us": round(cpu - base_cpu, 1),
                }
            rows.append(row)
    return rows


def _cell(stats: dict, baseline: bool = False) -> str:
    if baseline:
        return f"{stats['rps']:,} | {stats['cpu_us']:.1f}"
    return (
        f"{stats['rps']:,} ({stats['rps_ratio']:.2f}) "
        f"| {stats['cpu_us']:.1f} ({stats['cpu_delta_us']:+.1f})"
    )


def table(rows: list[dict]) -> str:
    """Markdown: raw ASGI, microasgi and Starlette; then microasgi alone and in the drain."""
    lines = [
        "| server | scenario | raw req/s | raw CPU µs/req | microasgi req/s (x raw) "
        "| microasgi CPU µs/req (Δ raw) | Starlette req/s (x raw) | Starlette CPU µs/req (Δ raw) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    drained = []
    for row in rows:
        apps = list(row["apps"].values())
        if row["scenario"].endswith("(drain)"):
            drained.append(
                f"| {row['server']} | {row['scenario'][:-8]} | "
                f"{_cell(apps[0], True)} | {_cell(apps[1])} |"
            )
            continue
        cells = [_cell(apps[0], True), _cell(apps[1]), _cell(apps[2])]
        lines.append(f"| {row['server']} | {row['scenario']} | " + " | ".join(cells) + " |")
    if drained:
        lines += [
            "",
            "| server | scenario | microasgi req/s | CPU µs/req | in the drain wrapper req/s "
            "(x) | CPU µs/req (Δ) |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            *drained,
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", default=["uvicorn", "hypercorn", "granian"])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds of load per run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load before each run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-middleware", dest="middleware", action="store_false")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="also microasgi inside the drain's wrapper (what python -m microasgi run serves), "
        "against microasgi alone",
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, no middleware rows")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.middleware = 1, 2, 1, False
    wrk = ensure_wrk()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as directory:
        for server in args.servers:
            rows += run_server(server, args, wrk, Path(directory))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
