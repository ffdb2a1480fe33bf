"""Run a batch iterator in a background thread so the step never waits on data."""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")


def put_unless_stopped(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` on `q`, re-checking `stop` every 0.1 s; False if stopped first.

    A producer thread blocked on a full queue would otherwise never notice that
    its consumer went away.
    """
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


def prefetch(it: Iterator[T], size: int = 2, name: str = "prefetch") -> Iterator[T]:
    """Yield the items of `it`, produced up to `size` ahead by a daemon thread.

    numpy releases the GIL in its kernels, so data generation overlaps the jitted
    step.  An exception in the producer is re-raised in the consumer.  When the
    consumer stops early (closed, or collected) the producer stops too: its puts
    time out and re-check the stop flag, so it never sits blocked on a full queue.
    """
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for item in it:
                if not put_unless_stopped(q, item, stop):
                    return
            q.put(end)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    thread = threading.Thread(target=produce, daemon=True, name=name)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
