"""Typed views of the stored items, shared by the handlers and the stream diff."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

OPEN_POINTER_PREFIX = ".open."


def open_pointer_id(session_type: str, target_num_members: int) -> str:
    return f"{OPEN_POINTER_PREFIX}{session_type}.{target_num_members}"


def is_session_id(item_id: str) -> bool:
    """Real sessions have random ids; bookkeeping items in the same table start with '.'."""
    return not item_id.startswith(".")


@dataclass(frozen=True)
class Member:
    member_id: str
    conn_id: str | None

    @property
    def connected(self) -> bool:
        return self.conn_id is not None


@dataclass(frozen=True)
class Session:
    id: str
    type: str
    target_num_members: int
    members: tuple[Member, ...]
    is_private: bool
    pinned_message: dict[str, Any] | None
    expire_after: int

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Session:
        return cls(
            id=item["id"],
            type=item["type"],
            target_num_members=int(item["targetNumMembers"]),
            members=tuple(Member(m["memberId"], m.get("connId")) for m in item.get("members", [])),
            is_private=bool(item.get("isPrivate", False)),
            pinned_message=plain(item["pinnedMessage"]) if item.get("pinnedMessage") else None,
            expire_after=int(item.get("expireAfter", 0)),
        )

    @property
    def started(self) -> bool:
        # Members who leave before the start give up their slot and are removed, so a full
        # list means the session started, and stays full from then on.
        return len(self.members) >= self.target_num_members

    @property
    def presence(self) -> list[bool]:
        return [m.connected for m in self.members]

    def member_num(self, member_id: str) -> int | None:
        for num, member in enumerate(self.members):
            if member.member_id == member_id:
                return num
        return None

    def member_num_by_connection(self, conn_id: str) -> int | None:
        for num, member in enumerate(self.members):
            if member.conn_id == conn_id:
                return num
        return None

    def connected_members(self) -> list[tuple[int, Member]]:
        return [(num, m) for num, m in enumerate(self.members) if m.connected]


def plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; clients want JSON numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
