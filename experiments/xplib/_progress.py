"""A dependency-free progress bar that draws only on a terminal (CI logs stay clean)."""

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
    """Yield from `items`, drawing `desc [####    ] i/n  rate it/s` on stderr if it is a tty."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    draw = sys.stderr.isatty()
    t0 = time.time()
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        if draw:
            rate = i / max(time.time() - t0, 1e-9)
            if total:
                filled = int(30 * i / total)
                bar = "#" * filled + " " * (30 - filled)
                sys.stderr.write(f"\r{desc} [{bar}] {i}/{total} {rate:.1f} it/s")
            else:
                sys.stderr.write(f"\r{desc} {i} {rate:.1f} it/s")
            sys.stderr.flush()
    if draw and i:
        sys.stderr.write("\n")
