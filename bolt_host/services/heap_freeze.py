"""Collections that do not walk the host's whole heap while a call over many apps runs.

A full collection of the garbage collector walks every tracked object of the host.  A stop of
1000 apps allocates enough long-lived objects (contexts, records, held events) to start one in
the middle of the call: 71 ms on the event loop at 1000 apps, a cost that grows with the number
of apps twice over (more objects to walk, more allocated to trigger it).  Inside
:func:`frozen_heap` what existed before the block sits in the collector's permanent generation
(``gc.freeze``): the call's own objects are still collected, the young ones first as always, but
no pass walks the rest; when the outermost block ends it goes back (``gc.unfreeze``) and the
next full collection, after the answer, sees all of it again.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_depth = 0  # frozen_heap blocks running now (calls overlap on the event loop): one heap, one count


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze what the heap holds now for the block (nested and overlapping blocks: the outermost)."""
    global _depth
    if _depth == 0:
        gc.freeze()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            gc.unfreeze()
