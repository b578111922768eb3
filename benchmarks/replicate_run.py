"""Replicate a real run folder N times into one bigger run, as if N copies of its load had run side by side.

Used by ``python benchmarks/report_benchmark.py --replicate RUN_DIR``: checking a real run exercises
what a synthetic history may not (faults, reconnects, rejoins, pinned messages, private sessions,
HEARTBEAT resends, several sockets per client, stack restarts...).

Every identity is made distinct per copy: client names (and so payload ids, ``<client>-<n>``, and
the proxy's connection names ``/?client=...&conn=...`` in the fault log), member ids, session ids,
session types (each copy matches in its own pool, as its players did), request ids (UUIDs) and
DynamoDB stream sequence numbers. Copy ``k`` gets the suffix ``_r<k>`` (copy 0 is the run as it
was) and its wall-clock times (13-digit epoch milliseconds, wherever they are: ``t``, a payload's
``ts``, a relay's ``time``, ``inclMessagesAfter``, run.json's ``ended_t`` and ``stack_restarts``)
shifted by ``k * duration / concurrent``, so about ``concurrent`` copies overlap at any moment, as
the players of a busy run do. ``mono`` is left alone: it orders one client's records, and clients
are distinct.

Files: history.jsonl, faults.jsonl, invocations.jsonl, stream-failures.jsonl, resources.jsonl
(every copy's lines, copy after copy), store.json (every copy's items), run.json (the source's, with
the last copy's ``ended_t`` and every copy's ``stack_restarts``), locust_stats.json (as it was).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LINE_FILES = ("history.jsonl", "faults.jsonl", "invocations.jsonl", "stream-failures.jsonl", "resources.jsonl")
_WORD = re.compile(r"[A-Za-z0-9_-]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SEQUENCE_STEP = 10**12  # between copies' stream sequence numbers (22 digits; a run spans far fewer)
_DAY_MS = 86_400_000


@dataclass
class Identities:
    """What the source run names, as the copies must rename it."""

    names: set[str] = field(default_factory=set)  # clients, members, sessions, session types
    clients: set[str] = field(default_factory=set)
    first_t: int = 0
    last_t: int = 0

    @classmethod
    def of(cls, history: Path) -> Identities:
        found = cls()
        times = []
        with open(history, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                record = json.loads(line)
                found.clients.add(record["client"])
                times.append(record["t"])
                for key in ("member", "session"):
                    if record.get(key):
                        found.names.add(str(record[key]))
                message = record.get("msg")
                if isinstance(message, dict):
                    for key in ("memberId", "sessionId", "sessionType"):
                        if isinstance(message.get(key), str) and message[key]:
                            found.names.add(message[key])
        found.names |= found.clients
        found.first_t, found.last_t = (min(times), max(times)) if times else (0, 0)
        return found


class Template:
    """One line of text, compiled once: its names get the copy's suffix, its times and sequence
    numbers the copy's offsets. ``render(suffix, t_offset, sequence_offset)`` is the copy's line."""

    __slots__ = ("text", "values")

    def __init__(self, line: str, ids: Identities) -> None:
        parts: list[str] = []
        self.values: list[tuple[int, bool]] = []  # (value, is a sequence number)
        last = 0
        for found in _WORD.finditer(line):
            word = found.group()
            replacement = self._replace(word, ids)
            if replacement is None:
                continue
            parts.append(line[last:found.start()].replace("{", "{{").replace("}", "}}"))
            parts.append(replacement)
            last = found.end()
        parts.append(line[last:].replace("{", "{{").replace("}", "}}"))
        self.text = "".join(parts)

    def _replace(self, word: str, ids: Identities) -> str | None:
        head, _, tail = word.rpartition("-")
        if word in ids.names or _UUID.fullmatch(word):
            return word + "{s}"
        if head in ids.clients and tail.isdigit():  # a payload id: <client>-<n>
            return head + "{s}-" + tail
        if not word.isdigit():
            return None
        is_time = len(word) == 13 and ids.first_t - _DAY_MS <= int(word) <= ids.last_t + _DAY_MS
        if is_time or len(word) >= 20:
            self.values.append((int(word), len(word) >= 20))
            return f"{{{len(self.values) - 1}}}"
        return None

    def render(self, suffix: str, t_offset: int, sequence_offset: int) -> str:
        return self.text.format(*[value + (sequence_offset if sequence else t_offset)
                                  for value, sequence in self.values], s=suffix)


def _copies(copies: int, concurrent: int, ids: Identities) -> list[tuple[str, int, int]]:
    """(suffix, time offset ms, sequence offset) of each copy."""
    step = (ids.last_t - ids.first_t) / max(1, concurrent)
    return [("" if k == 0 else f"_r{k}", round(k * step), k * _SEQUENCE_STEP) for k in range(copies)]


def _render_json(value: Any, ids: Identities, copy: tuple[str, int, int]) -> Any:
    return json.loads(Template(json.dumps(value), ids).render(*copy))


def replicate(source: Path, dest: Path, records: int, concurrent: int = 10) -> int:
    """Write into ``dest`` (which must exist) as many copies of the run in ``source`` as make about
    ``records`` history records (at least one copy); returns the history records written."""
    ids = Identities.of(source / "history.jsonl")
    with open(source / "history.jsonl", encoding="utf-8") as lines:
        per_copy = sum(1 for line in lines if line.strip())
    copies = _copies(max(1, round(records / max(1, per_copy))), concurrent, ids)
    for name in LINE_FILES:
        if not (source / name).exists():
            continue
        with open(source / name, encoding="utf-8") as lines:
            templates = [Template(line.rstrip("\n"), ids) for line in lines if line.strip()]
        with open(dest / name, "w", encoding="utf-8") as out:
            for copy in copies:
                out.writelines(template.render(*copy) + "\n" for template in templates)
    if (source / "run.json").exists():
        info = json.loads((source / "run.json").read_text())
        rendered = [_render_json(info, ids, copy) for copy in copies]
        merged = {**info, "stack_restarts": [r for copy in rendered for r in copy.get("stack_restarts") or []]}
        if info.get("ended_t") is not None:
            merged["ended_t"] = rendered[-1]["ended_t"]
        (dest / "run.json").write_text(json.dumps(merged, indent=1))
    if (source / "store.json").exists():
        store = json.loads((source / "store.json").read_text())
        tables = store.get("tables") or {}
        store["tables"] = {name: [item for copy in copies for item in _render_json(items, ids, copy)]
                           for name, items in tables.items()}
        (dest / "store.json").write_text(json.dumps(store))
    if (source / "locust_stats.json").exists():
        shutil.copyfile(source / "locust_stats.json", dest / "locust_stats.json")
    return per_copy * len(copies)
