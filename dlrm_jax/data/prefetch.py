"""Run a batch iterator in a background thread so the step never waits on data."""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(it: Iterator[T], size: int = 2) -> Iterator[T]:
    """Yield the items of `it`, produced up to `size` ahead by a daemon thread.

    numpy releases the GIL in its kernels, so data generation overlaps the jitted step.
    An exception in the producer is re-raised in the consumer.
    """
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce():
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_DONE)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            while not q.empty():
                q.get_nowait()
            thread.join(timeout=0.05)
