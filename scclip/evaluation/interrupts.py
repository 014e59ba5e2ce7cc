"""Ctrl-C and SIGTERM during an evaluation or labelling job: finish the current batch, keep what is stored, stop."""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(Exception):
    """Raised by the evaluation loop at the first batch boundary after a stop was asked for."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)


class StopRequest:
    """Set by the signal handlers; the loop checks it after every batch."""

    signum: int | None = None
    owner: int | None = None  # the process that installed the handlers (DataLoader workers inherit them)
    batch_size: int = 1  # what finishes before the loop stops, as the message says

    @classmethod
    def check(cls) -> None:
        if cls.signum is not None:
            raise Interrupted(cls.signum)


def _request_stop(signum: int, frame) -> None:
    if os.getpid() != StopRequest.owner:  # a forked DataLoader worker: it keeps loading for the main process
        return
    first = StopRequest.signum is None
    StopRequest.signum = signum
    if first:
        # A second Ctrl-C stops at once: what is stored is safe either way.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        current = "image" if StopRequest.batch_size == 1 else f"batch (up to {StopRequest.batch_size} images)"
        print(f"\n{signal.Signals(signum).name}: stopping after the current {current}, which is kept "
              "(Ctrl-C again stops at once)", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signals(batch_size: int = 1) -> Iterator[type[StopRequest]]:
    """Within the block, SIGINT/SIGTERM ask the loop to stop; the previous handlers come back afterwards.

    Args:
        batch_size: the images the loop works on at once: all of those finish before it stops.
    """
    previous = {signum: signal.signal(signum, _request_stop) for signum in EXIT_CODES}
    StopRequest.signum, StopRequest.owner, StopRequest.batch_size = None, os.getpid(), batch_size
    try:
        yield StopRequest
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        StopRequest.signum = None
