"""What every fault seam shares: seeded decisions, the fault log, and how a fault table names itself."""

from __future__ import annotations

from typing import Any


def fault_name(raw: Any, default_name: str, error: type[Exception]) -> tuple[str, str]:
    """(name, "fault 'name'" for messages) of one ``[[fault]]`` table; ``error`` with a one-line
    reason if it is not a table or its name is not a non-empty string."""
    if not isinstance(raw, dict):
        raise error(f"a fault must be a table of fields, not {raw!r}")
    name = raw.get("name", default_name)
    where = f"fault {name!r}"
    if not isinstance(name, str) or not name:
        raise error(f"{where}: 'name' must be a non-empty string")
    return name, where
