"""Whatever a client sends, parsing answers with a request or a one-line BadRequest, nothing else."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from simple_relay.inbound import BadRequest, parse_action, parse_connect_query
from simple_relay.model import Member, Session
from simple_relay.notifications import notices

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
_keys = st.sampled_from(["sessionType", "targetNumMembers", "private", "sessionId", "memberId", "other"])


@given(st.one_of(st.text(max_size=200), _json.map(json.dumps),
                 st.dictionaries(st.sampled_from(["action", "payload", "pinned", "inclMessagesAfter", "waitingFor"]),
                                 _json | st.sampled_from(["SEND_MESSAGE", "HEARTBEAT", "END_SESSION"]))
                 .map(json.dumps)))
def test_any_frame_parses_or_is_refused_in_one_line(body):
    try:
        parse_action(body)
    except BadRequest as exc:
        assert exc.reason and "\n" not in exc.reason


@given(st.dictionaries(_keys, st.text(max_size=12) | st.sampled_from(["2", "true", "abc"])))
def test_any_query_string_parses_or_is_refused_in_one_line(query):
    try:
        parse_connect_query(query)
    except BadRequest as exc:
        assert exc.reason and "\n" not in exc.reason


@st.composite
def _sessions(draw, members_pool):
    target = draw(st.integers(2, 4))
    count = draw(st.integers(1, target))
    chosen = draw(st.permutations(members_pool))[:count]
    members = tuple(Member(m, draw(st.sampled_from([None, f"{m}-c1", f"{m}-c2"]))) for m in chosen)
    return Session("s", "t", target, members, draw(st.booleans()), None, 0)


@given(st.data())
def test_notices_go_only_to_live_sockets_once_each(data):
    pool = ["m0", "m1", "m2", "m3"]
    old = data.draw(st.none() | _sessions(pool))
    new = data.draw(st.none() | _sessions(pool))
    found = notices(old, new)
    conns = [n.conn_id for n in found]
    assert len(conns) == len(set(conns))  # one frame per socket per change
    known = {m.conn_id for s in (old, new) if s for m in s.members if m.conn_id}
    assert set(conns) <= known
    for notice in found:
        types = [m["type"] for m in notice.messages]
        if "SESSION_CONNECT" in types:
            assert new is not None and new.started
        if "SESSION_END" in types:
            assert new is None
