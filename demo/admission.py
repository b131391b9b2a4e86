"""A bounded wait for the CPU-bound models, shared by the page and the JSON API.

One caption is computed at a time (two cores; a second one in parallel only makes both
slower). Behind it at most ``max_waiting`` requests wait, none longer than ``timeout``
seconds; anything beyond that is turned away at once with :class:`Busy`, so a burst of
requests cannot pile up threads, uploads and memory without bound.

    gate = Admission(max_waiting=8, timeout=30)
    with gate.turn():          # raises Busy when full or after waiting too long
        ...caption...

A request that brings its own upload (the JSON API) first takes a place, before a byte of the
upload is read: at most ``max_waiting + 1`` such requests are read, waiting or captioned at once.
Checking only the queue would let a burst through while its first requests are still reading:
of 64 simultaneous 9 MB uploads, dozens were read and then turned away, and the app grew by 300-480 MB.

    with gate.place():         # raises Busy at once when every place is taken
        data = read the upload
        with gate.turn():
            ...caption...
"""

from __future__ import annotations

import contextlib
import threading

# Seconds a turned-away client should wait before trying again (HTTP Retry-After): a few
# captions' worth at ~50-300 ms each.
RETRY_AFTER_SECONDS = 2


class Busy(RuntimeError):
    """The models are busy: too many requests are waiting, or this one waited too long."""

    retry_after = RETRY_AFTER_SECONDS


class Admission:
    def __init__(self, max_waiting: int = 8, timeout: float = 30.0):
        if max_waiting < 0 or timeout <= 0:
            raise ValueError("max_waiting must be >= 0 and timeout > 0")
        self.max_waiting = max_waiting
        self.timeout = timeout
        self._models = threading.Lock()  # held while a caption is computed
        self._counter = threading.Lock()  # guards _waiting and _placed
        self._waiting = 0
        self._placed = 0  # requests inside place(): reading their upload, waiting or being captioned

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.contextmanager
    def place(self):
        """Hold one of the ``max_waiting + 1`` places for requests with uploads; Busy when none is free.
        Never blocks, so it may be taken on the event loop."""
        with self._counter:
            if self._placed > self.max_waiting:
                raise Busy(f"the server is busy ({self._placed} requests in progress); try again shortly")
            self._placed += 1
        try:
            yield
        finally:
            with self._counter:
                self._placed -= 1

    @contextlib.contextmanager
    def turn(self):
        """Wait (bounded) for the models, hold them inside the ``with`` block."""
        if self._models.acquire(blocking=False):  # nobody computing: no queue to join
            got = True
        else:
            with self._counter:
                if self._waiting >= self.max_waiting:
                    raise Busy(f"the server is busy ({self._waiting} requests waiting); try again shortly")
                self._waiting += 1
            try:
                got = self._models.acquire(timeout=self.timeout)
            finally:
                with self._counter:
                    self._waiting -= 1
        if not got:
            raise Busy(f"the server is busy (waited {self.timeout:.0f} s for a turn); try again shortly")
        try:
            yield
        finally:
            self._models.release()
