"""Is a parser linear in its input? Two checks, neither a wall-clock threshold.

- Python operations: the bytecode operations `function(make(n))` runs, counted
  with a tracer (deterministic): eight times the input may cost at most ten times
  the operations.
- Time, for work done in C (a regular expression, `bytes.replace`) that the count
  cannot see: the best of several runs of the large input may take at most
  twenty times the best of the small one, plus a millisecond. Generous on
  purpose: linear work is 8 times, quadratic 64 times and more.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["assert_linear", "operations"]


def operations(function: Callable[..., Any], *args: Any) -> int:
    """How many bytecode operations of Python code `function(*args)` runs."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        function(*args)
    finally:
        sys.settrace(previous)
    return count


def _best_time(function: Callable[[Any], Any], value: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function(value)
        best = min(best, time.perf_counter() - started)
    return best


def assert_linear(
    make: Callable[[int], Any], function: Callable[[Any], Any], n: int, *, repeat: int = 5
) -> None:
    """`function` on `make(8 * n)` costs at most ~10x what it does on `make(n)`."""
    small, large = make(n), make(8 * n)
    ops_small, ops_large = operations(function, small), operations(function, large)
    assert ops_large <= 10 * max(ops_small, 1), f"operations: {ops_small} -> {ops_large}"
    time_small = _best_time(function, small, repeat)
    time_large = _best_time(function, large, repeat)
    assert time_large <= 20 * time_small + 0.001, f"seconds: {time_small:.6f} -> {time_large:.6f}"
