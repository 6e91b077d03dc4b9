"""Progress of conversion stages: a tqdm bar on a terminal, one line per stage elsewhere (logs of
a batch job get ``load: 50,000 img in 13.2 s``, not thousands of carriage-return redraws)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
             enabled: bool = True, count: int = 1) -> Iterator[T]:
    """Iterate ``iterable`` reporting progress (``count`` units per item) unless ``enabled`` is False."""
    if not enabled:
        yield from iterable
        return
    if sys.stderr.isatty():
        with tqdm(total=total * count if total is not None else None, desc=desc, unit=unit) as bar:
            for item in iterable:
                yield item
                bar.update(count)
        return
    start, done = time.perf_counter(), 0
    for item in iterable:
        yield item
        done += count
    print(f"{desc}: {done:,} {unit} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def note(message: str, enabled: bool = True) -> None:
    """A one-line message between progress reports."""
    if enabled:
        tqdm.write(message, file=sys.stderr)
