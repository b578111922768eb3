"""How long-running commands wait to be stopped."""

from __future__ import annotations

import os
import signal
import threading


def wait_until_stopped() -> None:
    """Block until Ctrl-C, SIGTERM, or the parent process goes away, so that a stack or proxy
    started by a runner that was killed does not outlive it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    try:
        while not stop.wait(0.5):
            if os.getppid() != parent:
                return
    except KeyboardInterrupt:
        pass
