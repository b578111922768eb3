"""What each change to a session tells its members: a pure function of the old and new images.

Being a pure function of the stream record is what makes the stream handler safe to retry:
the same record always yields the same frames, and the delivery ledger makes each one go once.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import messages
from .messages import Message
from .model import Session


@dataclass(frozen=True)
class Notice:
    conn_id: str
    messages: tuple[Message, ...]


def _session_connect(session: Session, num: int) -> Message:
    return messages.session_connect(session.type, session.id, num, session.presence, session.pinned_message)


def notices(old: Session | None, new: Session | None) -> list[Notice]:
    """Frames per connection, in a stable order, for one INSERT, MODIFY or REMOVE of a session."""
    if new is None:
        if old is None:
            return []
        return [Notice(m.conn_id, (messages.session_end(),)) for _, m in old.connected_members()]

    before = {m.member_id: m for m in old.members} if old else {}
    was_started = old.started if old else False
    started_now = new.started and not was_started
    frames: dict[str, list[Message]] = {}

    for num, member in new.connected_members():
        previous = before.get(member.member_id)
        joined = previous is None
        moved = not joined and previous.conn_id != member.conn_id
        out = frames.setdefault(member.conn_id, [])
        if joined or (moved and not new.started):
            out.append(messages.connection(member.member_id))
        if new.is_private and not new.started and (joined or moved):
            out.append(messages.private_session_pending(new.id, new.target_num_members))
        if started_now or (new.started and moved):
            out.append(_session_connect(new, num))
        if moved and previous.conn_id is not None:
            frames.setdefault(previous.conn_id, []).append(messages.connection_overwrite())

    if new.started and was_started:
        for num, member in enumerate(new.members):
            previous = before.get(member.member_id)
            if previous is None or previous.connected == member.connected:
                continue
            change = messages.member_reconnect(num) if member.connected else messages.member_disconnect(num)
            for other_num, other in new.connected_members():
                if other_num != num:
                    frames.setdefault(other.conn_id, []).append(change)

    return [Notice(conn, tuple(out)) for conn, out in frames.items() if out]
