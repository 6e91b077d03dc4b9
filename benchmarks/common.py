"""Helpers shared by the benchmark scripts: timing, machine info, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time of ``repeats`` runs after ``warmup`` runs (least disturbed by noise): wall time, or
    what ``clock`` measures (``time.process_time``: this process's CPU time)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def machine() -> dict[str, Any]:
    import numba
    import numpy
    import PIL

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__, "numba": numba.__version__, "pillow": PIL.__version__,
            "numba_threads": numba.get_num_threads()}


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Format rows as a Markdown table; columns are (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---:" if f else "---" for _, _, f in columns) + "|"
    def cell(v: Any, f: str) -> str:
        return "-" if v is None else (format(v, f) if f else str(v))

    body = ["| " + " | ".join(cell(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def rate(make_loader: Callable[[], Any], epochs: int) -> float:
    """Images per second a loader yields over ``epochs`` epochs, after a short warm-up."""
    loader = make_loader()
    for i, _ in enumerate(loader):  # warm-up: start the workers, compile, fill caches
        if i >= 5:
            break
    seen, t = 0, time.perf_counter()
    for _ in range(epochs):
        for x, _ in loader:
            seen += len(x)
    return seen / (time.perf_counter() - t)
