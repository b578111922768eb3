"""The fault log (``faults.jsonl``): one JSON line per injected fault, from any seam.

Fields (docs/architecture.md): ``t`` wall-clock ms, ``seam``, ``fault``, ``target``, ``params``,
``rule`` (``{"id": rule name, "seq": the decision's key under the seed}``).

Several processes (the proxy, the local stack) append to one file: each line is one ``write`` on a
descriptor opened with ``O_APPEND``, so lines never interleave.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


class FaultLog:
    def __init__(self, path: Path | None = None, keep: bool = True) -> None:
        self.path = path
        self.keep = keep
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def record(self, seam: str, fault: str, target: dict[str, Any], params: dict[str, Any], rule: str,
               seq: Any) -> dict[str, Any]:
        entry = {"t": int(time.time() * 1000), "seam": seam, "fault": fault, "target": target, "params": params,
                 "rule": {"id": rule, "seq": seq}}
        with self._lock:
            if self.keep:
                self.entries.append(entry)
            if self._fd is not None:
                os.write(self._fd, (json.dumps(entry) + "\n").encode())
        return entry

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
