"""The fault log (``faults.jsonl``): one JSON line per injected fault, from any seam.

Fields (docs/architecture.md): ``t`` wall-clock ms, ``seam``, ``fault``, ``target``, ``params``,
``rule`` (``{"id": rule name, "seq": the decision's key under the seed}``).
"""

from __future__ import annotations

import json
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
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def record(self, seam: str, fault: str, target: dict[str, Any], params: dict[str, Any], rule: str,
               seq: Any) -> dict[str, Any]:
        entry = {"t": int(time.time() * 1000), "seam": seam, "fault": fault, "target": target, "params": params,
                 "rule": {"id": rule, "seq": seq}}
        with self._lock:
            if self.keep:
                self.entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry) + "\n")
                self._file.flush()
        return entry

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
