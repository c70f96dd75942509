"""What the cyclic garbage collector finds: shared by a test and the in-process benchmark."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_garbage(kind: Callable[[object], str | None]) -> Iterator[Counter[str]]:
    """Count, by ``kind(obj)`` (None: not counted), the objects made inside the block that
    reference counting could not free and only the cyclic collector would. The collector
    is off inside the block and restored after; the counts are filled in as it ends."""
    counts: Counter[str] = Counter()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage
    try:
        yield counts
        gc.collect()
        counts.update(k for k in map(kind, gc.garbage) if k is not None)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
