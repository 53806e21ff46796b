"""Waiting for something another process or thread does, without a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, *, what: str = "") -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a true value, and return that
    value. ``TimeoutError`` (naming ``what``, else the predicate) if ``timeout`` seconds pass first;
    the predicate is always called once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        at_deadline = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if at_deadline:
            raise TimeoutError(f"still waiting after {timeout:g} s for {what or getattr(predicate, '__name__', predicate)}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
