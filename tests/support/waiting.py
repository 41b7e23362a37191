"""Waiting for what the controller settles in the background (a monitor's check, a
storage's other attach jobs) without sleeping longer than it takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    """`check()`'s first truthy value, polled every 0.2 s; its last value after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)
