"""HTTP benchmarks, in process: raw ASGI vs microasgi vs Starlette, in the same run.

    .venv/bin/python benchmarks/bench_http.py [--quick] [--json FILE]

Each app is called directly, ``await app(scope, receive, send)``, in a loop inside
one asyncio event loop: no server, no sockets, so the figures are the frameworks'
own overhead per request. Every app is first checked to answer 200 with the right
body. Then, for several rounds, every (scenario, app) pair times one batch of
requests, in an order that rotates from round to round so that machine noise
falls on all of them alike; the best round is reported, and the median next to it.

The targets are printed with PASS or MISS, but the exit status is always 0 once
the apps have passed their checks: a benchmark is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import harness
from apps import (
    HELLO,
    microasgi_json,
    microasgi_json_function_middleware,
    microasgi_plaintext,
    raw_json,
    raw_plaintext,
    starlette_json,
    starlette_json_function_middleware,
    starlette_plaintext,
)
from harness import (
    ASGIApp,
    Check,
    Memory,
    Receive,
    Samples,
    Scope,
    Send,
    expect_json,
    expect_text,
    http_scope,
    measure_memory,
    run_rounds,
    verify,
)

RAW = "raw ASGI"
MICROASGI = "microasgi"
STARLETTE = "Starlette"
FRAMEWORKS = (MICROASGI, STARLETTE)

PLAINTEXT = "plaintext"
JSON_ROUTE = "json"
ROUTES = "routes"
FUNCTION_MIDDLEWARE = "function middleware"
FLOOR = "floor"
NOOP = "no-op app"

USER_ID = 42
ROUTE_COUNTS = (1, 100, 1000)

#: microasgi / raw ASGI on the JSON route with a parameter (issue 13's target; until
#: it was met, this benchmark checked 1.6).
TARGET_JSON_RATIO = 1.15
#: 1,000 routes / 1 route, requesting the last route registered.
TARGET_ROUTE_SCALING = 1.15
#: What one function middleware adds to the JSON route, in µs.
TARGET_FUNCTION_MIDDLEWARE_US = 1.0


@dataclass(frozen=True)
class Settings:
    rounds: int
    batch_ms: float
    memory_requests: int
    memory_warmup: int


FULL = Settings(rounds=20, batch_ms=120, memory_requests=10_000, memory_warmup=2_000)
QUICK = Settings(rounds=5, batch_ms=20, memory_requests=2_000, memory_warmup=500)


@dataclass
class Bench(Samples):
    """One app answering one request, timed over several rounds."""

    scenario: str
    framework: str
    app: ASGIApp
    scope: dict[str, Any]
    check: Check | None
    routes: int | None = None
    requests_per_batch: int = 0
    samples_ns: list[float] = field(default_factory=list)  # per request, one per round

    @property
    def label(self) -> str:
        if self.routes is None:
            return self.framework
        plural = "route" if self.routes == 1 else "routes"
        return f"{self.framework}, {self.routes:,} {plural}"


async def _noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Sends nothing: what the harness costs by itself."""


def _route_paths(count: int) -> list[str]:
    return [f"/r{i}/users/{{user_id:int}}" for i in range(count)]


def build_benches() -> list[Bench]:
    hello = expect_text(HELLO)
    user = expect_json({"id": USER_ID})
    root = http_scope("/")
    json_scope = http_scope(f"/users/{USER_ID}")
    json_paths = ["/users/{user_id:int}"]
    benches = [
        Bench(PLAINTEXT, RAW, raw_plaintext, root, hello),
        Bench(PLAINTEXT, MICROASGI, microasgi_plaintext(), root, hello),
        Bench(PLAINTEXT, STARLETTE, starlette_plaintext(), root, hello),
        Bench(JSON_ROUTE, RAW, raw_json, json_scope, user),
        Bench(JSON_ROUTE, MICROASGI, microasgi_json(json_paths), json_scope, user),
        Bench(JSON_ROUTE, STARLETTE, starlette_json(json_paths), json_scope, user),
        Bench(FUNCTION_MIDDLEWARE, RAW, raw_json, json_scope, user),
        Bench(
            FUNCTION_MIDDLEWARE,
            MICROASGI,
            microasgi_json_function_middleware(json_paths),
            json_scope,
            user,
        ),
        Bench(
            FUNCTION_MIDDLEWARE,
            STARLETTE,
            starlette_json_function_middleware(json_paths),
            json_scope,
            user,
        ),
    ]
    # Raw ASGI does not route: it is timed once, on the path of the last of 1,000 routes.
    last_scope = http_scope(f"/r{max(ROUTE_COUNTS) - 1}/users/{USER_ID}")
    benches.append(Bench(ROUTES, RAW, raw_json, last_scope, user))
    factories: dict[str, Callable[[list[str]], ASGIApp]] = {
        MICROASGI: microasgi_json,
        STARLETTE: starlette_json,
    }
    for framework, factory in factories.items():
        for count in ROUTE_COUNTS:
            scope = http_scope(f"/r{count - 1}/users/{USER_ID}")
            app = factory(_route_paths(count))
            benches.append(Bench(ROUTES, framework, app, scope, user, routes=count))
    benches.append(Bench(FLOOR, NOOP, _noop_app, root, None))
    return benches


# -- running ---------------------------------------------------------------------------


async def run_memory(benches: Sequence[Bench], settings: Settings) -> dict[str, Memory]:
    results = {}
    for bench in benches:
        if bench.scenario in (JSON_ROUTE, FLOOR):
            results[bench.framework] = await measure_memory(
                bench.app, bench.scope, settings.memory_requests, settings.memory_warmup
            )
    return results


# -- results ---------------------------------------------------------------------------


@dataclass
class Results:
    benches: list[Bench]
    memory: dict[str, Memory]
    settings: Settings
    seconds: float

    def find(self, scenario: str, framework: str, routes: int | None = None) -> Bench:
        for bench in self.benches:
            if (bench.scenario, bench.framework, bench.routes) == (scenario, framework, routes):
                return bench
        raise KeyError((scenario, framework, routes))

    def ratio_to_raw(self, bench: Bench) -> float:
        """Best time over the best time of raw ASGI answering the same request."""
        return bench.best_us / self.find(bench.scenario, RAW).best_us

    def route_scaling(self, framework: str) -> float:
        """Best time with the most routes over best time with the fewest."""
        most, fewest = max(ROUTE_COUNTS), min(ROUTE_COUNTS)
        return (
            self.find(ROUTES, framework, most).best_us
            / self.find(ROUTES, framework, fewest).best_us
        )

    def middleware_cost(self, framework: str) -> float:
        """µs one function middleware adds to the JSON route."""
        return (
            self.find(FUNCTION_MIDDLEWARE, framework).best_us
            - self.find(JSON_ROUTE, framework).best_us
        )

    def targets(self) -> list[Target]:
        def json_ratio(framework: str) -> float:
            return self.ratio_to_raw(self.find(JSON_ROUTE, framework))

        return [
            Target(
                "microasgi / raw ASGI, JSON route with a parameter",
                TARGET_JSON_RATIO,
                json_ratio(MICROASGI),
                json_ratio(STARLETTE),
            ),
            Target(
                "microasgi 1,000 routes / 1 route",
                TARGET_ROUTE_SCALING,
                self.route_scaling(MICROASGI),
                self.route_scaling(STARLETTE),
            ),
            Target(
                "one function middleware, µs added to the JSON route",
                TARGET_FUNCTION_MIDDLEWARE_US,
                self.middleware_cost(MICROASGI),
                self.middleware_cost(STARLETTE),
            ),
        ]


@dataclass(frozen=True)
class Target:
    name: str
    limit: float
    microasgi: float
    starlette: float

    @property
    def passed(self) -> bool:
        return self.microasgi <= self.limit


_SCENARIO_TITLES = {
    PLAINTEXT: ("plaintext", "GET /"),
    JSON_ROUTE: ("JSON, int parameter", f"GET /users/{USER_ID}"),
    ROUTES: ("JSON, last of N routes", f"GET /r{{N-1}}/users/{USER_ID}"),
    FUNCTION_MIDDLEWARE: ("JSON + function middleware", f"GET /users/{USER_ID}"),
}


def format_table(results: Results) -> str:
    lines = []
    header = f"{'scenario':<26}  {'app':<24}  {'best µs':>8}  {'median µs':>9}  {'vs raw':>6}"
    lines += [header, "-" * len(header)]
    previous = None
    for bench in results.benches:
        if bench.scenario == FLOOR:
            continue
        if bench.scenario != previous:
            title, request = _SCENARIO_TITLES[bench.scenario]
            if previous is not None:
                lines.append("")
            column = [title, request]
            previous = bench.scenario
        left = column.pop(0) if column else ""
        ratio = results.ratio_to_raw(bench)
        lines.append(
            f"{left:<26}  {bench.label:<24}  {bench.best_us:>8.2f}  {bench.median_us:>9.2f}  "
            f"{ratio:>6.2f}"
        )
    lines.append("")
    scaling = ", ".join(f"{f} {results.route_scaling(f):.2f}" for f in FRAMEWORKS)
    lines.append(f"1,000 routes / 1 route:  {scaling}")
    floor = results.find(FLOOR, NOOP)
    memory = {name: m for name, m in results.memory.items() if name != NOOP}
    if memory:
        requests = next(iter(memory.values())).requests
        peaks = ", ".join(f"{name} {m.peak:,} B" for name, m in memory.items())
        kept = ", ".join(f"{name} {m.retained:,} B" for name, m in memory.items())
        lines.append(f"memory, tracemalloc peak while serving {requests:,} JSON requests:")
        lines.append(f"  {peaks}")
        lines.append(f"  left allocated after the run (a leak would show here): {kept}")
    harness = f"{floor.best_us:.2f} µs per request"
    if NOOP in results.memory:
        harness += f", {results.memory[NOOP].peak:,} B peak"
    lines.append(f"harness alone (a no-op app): {harness}; included in every figure above")
    lines += ["", "targets"]
    for target in results.targets():
        verdict = "PASS" if target.passed else "MISS"
        lines.append(
            f"  {target.name:<50}  {target.microasgi:6.2f} <= {target.limit:<4}  "
            f"{verdict}   (Starlette {target.starlette:.2f})"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": {
            name: version(name) for name in ("microasgi", "starlette", "uvicorn", "anyio")
        },
    }


def command_line(argv: Sequence[str] | None, doc: str | None) -> argparse.Namespace:
    """The options every in-process benchmark takes (--quick, --json), after which the
    machine it runs on is printed."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (a few seconds)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both",
        help="the event loop (default: both, uvloop when installed)",
    )
    parser.add_argument(
        "--inline",
        action="store_true",
        help="await each request inline instead of in a task of its own (as servers do)",
    )
    args = parser.parse_args(argv)
    harness.TASK_PER_REQUEST = not args.inline
    info = machine()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"{info['python']} on {info['cpus']} CPUs ({info['cpu']}); {versions}")
    return args


def to_json(results: Results) -> dict[str, Any]:
    return {
        "machine": machine(),
        "settings": vars(results.settings),
        "seconds": round(results.seconds, 1),
        "benchmarks": [
            {
                "scenario": bench.scenario,
                "app": bench.framework,
                "routes": bench.routes,
                "path": bench.scope["path"],
                "requests_per_batch": bench.requests_per_batch,
                "best_us": round(bench.best_us, 4),
                "median_us": round(bench.median_us, 4),
                "ratio_to_raw": None
                if bench.scenario == FLOOR
                else round(results.ratio_to_raw(bench), 4),
                "rounds_us": [round(ns / 1000, 4) for ns in bench.samples_ns],
            }
            for bench in results.benches
        ],
        "route_scaling_1000_over_1": {f: results.route_scaling(f) for f in FRAMEWORKS},
        "memory": {name: vars(m) for name, m in results.memory.items()},
        "targets": [{**vars(t), "passed": t.passed} for t in results.targets()],
    }


# -- main ------------------------------------------------------------------------------


async def run(benches: list[Bench], settings: Settings) -> Results:
    started = time.perf_counter()
    problems = await verify(benches)
    if problems:
        raise SystemExit("an app failed its check, nothing was timed:\n  " + "\n  ".join(problems))
    await run_rounds(benches, settings.rounds, settings.batch_ms)
    memory = await run_memory(benches, settings)
    return Results(benches, memory, settings, time.perf_counter() - started)


def event_loops(choice: str) -> list[str]:
    """The loops to run on: uvloop only when it is installed."""
    wanted = ["asyncio", "uvloop"] if choice == "both" else [choice]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("uvloop is not installed: pip install uvloop") from None
        wanted = [loop for loop in wanted if loop != "uvloop"]
    return wanted


def run_on(loop: str, benches: list[Bench], settings: Settings) -> Results:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(run(benches, settings))
    return asyncio.run(run(benches, settings))


def main(argv: Sequence[str] | None = None) -> int:
    args = command_line(argv, __doc__)
    settings = QUICK if args.quick else FULL
    driven = "each in its own task" if harness.TASK_PER_REQUEST else "awaited inline"
    print(
        f"{settings.rounds} rounds of ~{settings.batch_ms:g} ms per app, best and median "
        f"per request, in process (no server), requests {driven}, garbage collection on\n"
    )
    sys.stdout.flush()

    everything = {}
    for loop in event_loops(args.loop):
        results = run_on(loop, build_benches(), settings)
        print(f"== {loop} ==\n")
        print(format_table(results))
        print(f"\n({results.seconds:.0f} s)\n")
        sys.stdout.flush()
        everything[loop] = to_json(results)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(everything, file, indent=2)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
