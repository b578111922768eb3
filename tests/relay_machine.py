"""A Hypothesis state machine that plays several clients against the local stack through the chaos
proxy, one step at a time, and checks every socket's frames against the protocol model
(tests/relay_model.py) after each step.

Shrinkable because each step ends quiet, not after a time: the step's own invocations have finished,
nothing is running, the sessions stream has been handled up to its last record, and a ping sent on
every open socket has come back (frames are in order, so whatever the relay sent before is in).
The stack and the proxy are seeded (SEED) and shared by the examples (starting them costs ~2 s);
each example has its own session type and client tags, and ends with every socket closed, the
stack quiet and no fault left armed, so examples do not see each other.

A failing example prints as a script (``state = RelayMachine()``, one ``state.<rule>(...)`` line
per step); it replays in any test that runs it inside ``use_world`` (or against a reference stack
started on first use).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import websocket
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from harness.faults.log import FaultLog
from harness.faults.plan import FaultPlan
from harness.proxy.faults import parse_fault
from harness.proxy.server import ChaosProxy
from harness.stack import dynamodb as local_ddb
from harness.stack.local_stack import LocalStack, StackOptions
from harness.stack.streams import StreamReader
from tests.relay_model import Delivery, Model, merge, show
from tests.stack_support import wait_until

SEED = 1
CLIENTS = ("c0", "c1", "c2", "c3")
SIZES = (2, 3)
SETTLE_S = 20.0  # a step that is not quiet by then fails (a relay that never settles is a finding too)
HOLD_READS_MS = 200  # a concurrent join's reads wait this long, so both joins read before either writes


class Refused(Exception):
    """The relay refused a WebSocket handshake."""


class Socket:
    """One client socket through the proxy; ``drain`` returns the frames that came since the last."""

    _tokens = itertools.count(1)

    def __init__(self, url: str, label: str) -> None:
        self.label = label
        try:
            self.ws = websocket.create_connection(url, timeout=10)
        except websocket.WebSocketBadStatusException as exc:
            raise Refused(f"{label}: handshake refused with {exc.status_code}") from None
        self.open = True

    def drain(self) -> list[Any]:
        """Ping, then read until that ping's pong: every frame sent before it has arrived."""
        token = str(next(self._tokens)).encode()
        self.ws.ping(token)
        frames: list[Any] = []
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PONG and data == token:
                return frames
            if opcode == websocket.ABNF.OPCODE_TEXT:
                try:
                    frames.append(json.loads(data))
                except ValueError:
                    frames.append(data.decode("utf-8", "replace"))
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                raise AssertionError(f"{self.label}: the relay closed the socket ({data[:2].hex()})")

    def close(self) -> None:
        if self.open:
            self.open = False
            self.ws.close()


class Watch:
    """Wraps the stack's functions: what is running, which routes finished per connection, and the
    last stream sequence number a stream invocation handled successfully."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.done: Counter[tuple[str, str]] = Counter()  # (connection id, route) -> finished invocations
        self.connections: dict[tuple[str, ...], str] = {}  # (run, client, conn) tags -> connection id
        self.stream_done = 0

    def wrap(self, function: Any) -> None:
        inner = function.invoke

        def invoke(event: dict[str, Any], queued_ms: float = 0.0) -> Any:
            context = event.get("requestContext") or {}
            with self.lock:
                self.running += 1
                query = event.get("queryStringParameters") or {}
                if context.get("routeKey") == "$connect" and "run" in query:
                    self.connections[(query["run"], query["client"], query["conn"])] = context["connectionId"]
            try:
                invocation = inner(event, queued_ms)
            finally:
                with self.lock:
                    self.running -= 1
            records = event.get("Records") or []
            with self.lock:
                if "connectionId" in context:
                    self.done[(context["connectionId"], context["routeKey"])] += 1
                payload = invocation.payload if isinstance(invocation.payload, dict) else {}
                if records and not invocation.failed and not payload.get("batchItemFailures"):
                    last = max(int(r["dynamodb"]["SequenceNumber"]) for r in records)
                    self.stream_done = max(self.stream_done, last)
            return invocation

        function.invoke = invoke


class RelayWorld:
    """A local stack (``template``, default the reference relay) behind the chaos proxy, a live fault
    plan, and what tells when they are quiet."""

    def __init__(self, template: Path | None = None, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="relay-machine-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.plan = FaultPlan([], SEED, FaultLog(self.log_dir / "faults.jsonl"), live=True)
        options = StackOptions(log_dir=self.log_dir, faults=self.plan)
        if template is not None:
            options.template = template
        self.stack = LocalStack(options).start()
        self.watch = Watch()
        for function in self.stack.functions.values():
            self.watch.wrap(function)
        self.proxy = ChaosProxy(self.stack.endpoints["websocket"], seed=SEED).start()
        assert self.stack.deployment is not None
        streams = local_ddb.client(self.stack.dynamodb_endpoint, "dynamodbstreams")
        self.stream = StreamReader(streams, self.stack.deployment.streams[0].stream_arn)
        self.stream.skip_to_end()
        self.stream_written = 0
        self.store = local_ddb.client(self.stack.dynamodb_endpoint)

    def stop(self) -> None:
        self.proxy.stop()
        self.stack.stop()

    def url(self, **query: str) -> str:
        return f"{self.proxy.endpoint}/?{urlencode(query)}"

    def quiet(self) -> bool:
        """Nothing running, and the stream handled up to its last record."""
        if self.watch.running:
            return False
        for record in self.stream.poll():
            self.stream_written = max(self.stream_written, int(record["dynamodb"]["SequenceNumber"]))
        with self.watch.lock:
            return self.watch.running == 0 and self.watch.stream_done >= self.stream_written

    def settle(self, finished: list[tuple[str, str, int]]) -> None:
        """Wait until each (connection id, route, n) has finished n times and the stack is quiet."""
        def ready() -> bool:
            with self.watch.lock:
                done = all(self.watch.done[(conn, route)] >= n for conn, route, n in finished)
            return done and self.quiet()

        wait_until(ready, SETTLE_S, "the stack to settle")

    def sessions_of(self, session_type: str) -> list[dict[str, Any]]:
        """The sessions table's items of this session type, open pointers included (a scan)."""
        pages = self.store.get_paginator("scan").paginate(
            TableName=self.stack.tables["SessionsTable"], ConsistentRead=True,
            FilterExpression="#type = :type OR begins_with(#id, :pointers)",
            ExpressionAttributeNames={"#type": "type", "#id": "id"},
            ExpressionAttributeValues={":type": {"S": session_type}, ":pointers": {"S": f".open.{session_type}."}})
        return [item for page in pages for item in page["Items"]]

    def session_members(self, conn_id: str) -> list[str]:
        """The connection ids of the members of the session this connection joined (from the store)."""
        tables = self.stack.tables
        record = self.store.get_item(TableName=tables["ConnectionsTable"], Key={"id": {"S": conn_id}},
                                     ConsistentRead=True).get("Item")
        if record is None:
            return []
        session = self.store.get_item(TableName=tables["SessionsTable"], Key={"id": record["sessionId"]},
                                      ConsistentRead=True).get("Item") or {}
        return [m["M"].get("connId", {}).get("S", "-") for m in session.get("members", {}).get("L", [])]


_current: RelayWorld | None = None


@contextlib.contextmanager
def use_world(world: RelayWorld) -> Iterator[RelayWorld]:
    """Run the machines created inside on ``world``."""
    global _current
    before, _current = _current, world
    try:
        yield world
    finally:
        _current = before


def current_world() -> RelayWorld:
    """The world set by ``use_world``; else a reference stack, started on first use (a pasted script)."""
    global _current
    if _current is None:
        _current = RelayWorld()
        atexit.register(_current.stop)
    return _current


@dataclass
class Client:
    """What one player knows, as a real client would: its socket, its member id, what it waits for."""

    name: str
    socket: Socket | None = None
    sockets: int = 0
    member_id: str | None = None
    private: bool = False
    session_id: str | None = None
    seen_pending: bool = False
    seen_connect: bool = False
    pinned_after: int = 0
    stale: list[Socket] = field(default_factory=list)

    def joined(self, private: bool, session_id: str | None = None) -> None:
        """A new membership: nothing learned about it yet (a private guest knows the session's id)."""
        self.member_id, self.private, self.session_id = None, private, session_id
        self.seen_pending = self.seen_connect = False

    def waiting_for(self) -> list[str]:
        waiting = [] if self.member_id else ["CONNECTION"]
        if self.private and not self.seen_pending and not self.seen_connect:
            waiting.append("PRIVATE_SESSION_PENDING")
        return waiting if self.seen_connect else [*waiting, "SESSION_CONNECT"]

    def learn(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "CONNECTION":
            self.member_id = message.get("memberId")
        elif kind in ("PRIVATE_SESSION_PENDING", "SESSION_CONNECT"):
            self.session_id = message.get("sessionId")
            self.seen_pending |= kind == "PRIVATE_SESSION_PENDING"
            self.seen_connect |= kind == "SESSION_CONNECT"
            pinned = message.get("pinnedMessage") or {}
            self.pinned_after = max(self.pinned_after, pinned.get("time", 0))
        elif kind == "MESSAGE" and message.get("pinned"):
            self.pinned_after = max(self.pinned_after, message.get("time", 0))


def _who(kind: str) -> st.SearchStrategy[str]:
    """One of the clients the machine says can take this kind of step now (see RelayMachine.can)."""
    return st.runner().flatmap(lambda machine: st.sampled_from(machine.can(kind)))


class RelayMachine(RuleBasedStateMachine):
    """Players c0..c3 join, chat, pin, heartbeat, drop, rejoin and end sessions while single faults
    are armed; after every step each socket must have got exactly the frames the model says."""

    _runs = itertools.count(1)

    def __init__(self) -> None:
        super().__init__()
        self.world = current_world()
        self.run = str(next(self._runs))
        self.type = f"t{self.run}"
        self.model = Model()
        self.clients = {name: Client(name) for name in CLIENTS}
        self.sent = 0
        self.faults = 0
        self.armed: tuple[str, str, str | None] | None = None  # (where, rule name, socket label)

    # ---- who can do what ---------------------------------------------------------------------
    def can(self, kind: str) -> list[str]:
        clients = self.clients.values()
        if kind == "idle":
            return [c.name for c in clients if c.socket is None]
        if kind == "open":
            return [c.name for c in clients if c.socket is not None]
        if kind == "knows_member_id":
            return [c.name for c in clients if c.member_id]
        assert kind == "knows_private_id"
        return [c.name for c in clients if c.private and c.session_id]

    def _label(self, client: Client) -> str:
        return f"{client.name}#{client.sockets}"

    def _conn_id(self, label: str) -> str:
        name, conn = label.split("#")
        return self.world.watch.connections[(self.run, name, conn)]

    # ---- steps -------------------------------------------------------------------------------
    def _open(self, client: Client, **query: str) -> Socket | None:
        client.sockets += 1
        label = self._label(client)
        try:
            return Socket(self.world.url(**query, client=client.name, conn=str(client.sockets), run=self.run), label)
        except Refused:
            return None

    def _check(self, what: str, expected: Delivery, finished: list[tuple[str, str, int]]) -> None:
        """Settle, then compare every open socket's new frames with ``expected``."""
        self.world.settle(finished)
        sockets = {c.socket.label: (c, c.socket) for c in self.clients.values() if c.socket is not None}
        sockets.update({s.label: (c, s) for c in self.clients.values() for s in c.stale})
        observed = {label: socket.drain() for label, (_, socket) in sockets.items()}
        expected = self._faulted(expected, set(sockets))
        for label in sorted(set(expected) | set(observed)):
            want, got = expected.get(label, []), observed.get(label, [])
            assert label in sockets, f"after {what}: the model expects frames on closed socket {label}"
            assert self.model.matches(want, got), (
                f"after {what}: socket {label} should have got {json.dumps(show(want))}\n"
                f"but got {json.dumps(got)}")
            client = sockets[label][0]
            for frame in got:
                for message in frame if isinstance(frame, list) else []:
                    client.learn(message)
        self._check_store(what)

    def _check_store(self, what: str) -> None:
        """Who is in which session, and the open-session pointers: the store must agree with the model."""
        labels = {conn: f"{client}#{n}" for (run, client, n), conn in self.world.watch.connections.items()
                  if run == self.run}
        sessions, pointers = [], {}
        for item in self.world.sessions_of(self.type):
            if item["id"]["S"].startswith(".open."):
                pointers[int(item["id"]["S"].rsplit(".", 1)[1])] = int(item["numWaiting"]["N"])
            else:
                members = [m["M"].get("connId", {}).get("S") for m in item.get("members", {}).get("L", [])]
                sessions.append([labels.get(conn, conn) if conn else "-" for conn in members])
        model = [[slot.socket or "-" for slot in s.slots] for s in self.model.sessions if not s.ended]
        assert sorted(sessions) == sorted(model), (
            f"after {what}: the store's sessions have members {sorted(sessions)}, the model's {sorted(model)}")
        waiting = {size: len(s.slots) for (_, size), s in self.model.open_public.items()}
        assert pointers == waiting, (f"after {what}: the store's open-session pointers count {pointers} waiting "
                                     f"(size: members), the model {waiting}")

    def _faulted(self, expected: Delivery, open_sockets: set[str]) -> Delivery:
        """``expected`` after the armed fault, if it took effect in this step (then it is disarmed)."""
        if self.armed is None:
            return expected
        where, name, label = self.armed
        if where == "stack":
            if self.world.plan.used(name):
                self.world.plan.remove(name)
                self.armed = None
            return expected
        hits = [e for e in self.world.proxy.fault_log.entries if e["rule"]["id"] == name]
        if not hits:
            if label not in open_sockets:  # that socket closed before anything came to it
                self._disarm()
            return expected
        self._disarm()
        frames = list(expected.get(label, []))
        types = hits[0]["target"]["types"]
        index = next((i for i, f in enumerate(frames) if sorted(m["type"] for m in f) == types), None)
        assert index is not None, (f"the proxy's {hits[0]['fault']} hit a frame of {types} on {label}, "
                                   f"which the model does not expect there")
        if hits[0]["fault"] == "drop":
            del frames[index]
        else:
            frames.insert(index, frames[index])
        return {**expected, label: frames}

    def _disarm(self) -> None:
        if self.armed is not None:
            where, name, _ = self.armed
            if where == "stack":
                self.world.plan.remove(name)
            else:
                self.world.proxy.call(self.world.proxy.remove_fault(name))
            self.armed = None

    def _close(self, client: Client, socket: Socket) -> tuple[str, str, int]:
        socket.close()
        return self._conn_id(socket.label), "$disconnect", 1

    def _act(self, client: Client, body: dict[str, Any], what: str, expected: Delivery) -> None:
        assert client.socket is not None
        conn_id = self._conn_id(client.socket.label)
        before = self.world.watch.done[(conn_id, "$default")]
        client.socket.ws.send(json.dumps(body))
        self._check(what, expected, [(conn_id, "$default", before + 1)])

    # ---- joining ------------------------------------------------------------------------------
    @precondition(lambda self: self.can("idle"))
    @rule(client=_who("idle"), size=st.sampled_from(SIZES))
    def join_public(self, client: str, size: int) -> None:
        """Public matchmaking into a session of ``size``."""
        player = self.clients[client]
        player.socket = self._open(player, sessionType=self.type, targetNumMembers=str(size))
        assert player.socket is not None, f"join_public: {client}'s handshake was refused"
        player.joined(private=False)
        expected = self.model.join_public(client, player.socket.label, self.type, size)
        self._check(f"join_public({client}, {size})", expected, [])

    @precondition(lambda self: len(self.can("idle")) >= 2)
    @rule(clients=st.runner().flatmap(lambda m: st.lists(st.sampled_from(m.can("idle")), min_size=2, max_size=3,
                                                         unique=True)),
          size=st.sampled_from(SIZES))
    def join_public_together(self, clients: list[str], size: int) -> None:
        """Two or three players join the same (type, size) at the same instant; their reads are held
        back so they all read before any writes. Any serial order of the joins is a correct outcome."""
        hold = f"hold-reads-{self.run}"
        self.world.plan.add({"name": hold, "seam": "store", "type": "latency",
                             "params": {"ms": HOLD_READS_MS, "when": "after"},
                             "match": {"function": "WebSocketFunction", "operation": "GetItem"}})
        players = [self.clients[c] for c in clients]
        query = {"sessionType": self.type, "targetNumMembers": str(size)}
        try:
            with ThreadPoolExecutor(len(players)) as pool:
                sockets = list(pool.map(lambda p: self._open(p, **query), players))
        finally:
            self.world.plan.remove(hold)
        for player, socket in zip(players, sockets, strict=True):
            assert socket is not None, f"join_public_together: {player.name}'s handshake was refused"
            player.socket = socket
            player.joined(private=False)
        self.world.settle([])
        expected = self._serial_order(players, size)
        self._check(f"join_public_together({clients}, {size})", expected, [])

    def _serial_order(self, players: list[Client], size: int) -> Delivery:
        """The model after the serial order of the concurrent joins that the store shows."""
        labels = {self._conn_id(s.label): s.label for c in self.clients.values() for s in [c.socket] if s}
        actual = {p.name: [labels.get(conn, conn) for conn in self.world.session_members(self._conn_id(
            p.socket.label))] for p in players if p.socket}
        for order in itertools.permutations(players):
            model = self.model.copy()
            delivery: Delivery = {}
            for p in order:
                assert p.socket is not None
                delivery = merge(delivery, model.join_public(p.name, p.socket.label, self.type, size))
            mine = {p.name: [s.socket or "-" for s in model.member_of[p.name].slots] for p in players}
            if mine == actual:
                self.model = model
                return delivery
        raise AssertionError(f"concurrent joins of {[p.name for p in players]}: the store holds {actual}, which "
                             "no serial order of these joins gives")

    @precondition(lambda self: self.can("idle"))
    @rule(client=_who("idle"), size=st.sampled_from(SIZES))
    def host_private(self, client: str, size: int) -> None:
        """Host a private session of ``size``."""
        player = self.clients[client]
        player.socket = self._open(player, sessionType=self.type, targetNumMembers=str(size), private="true")
        assert player.socket is not None, f"host_private: {client}'s handshake was refused"
        player.joined(private=True)
        expected = self.model.host_private(client, player.socket.label, self.type, size)
        self._check(f"host_private({client}, {size})", expected, [])

    @precondition(lambda self: self.can("idle") and self.can("knows_private_id"))
    @rule(client=_who("idle"), via=_who("knows_private_id"))
    def join_private(self, client: str, via: str) -> None:
        """Join the private session whose id ``via`` was told (refused if it is full or gone)."""
        player, session_id = self.clients[client], self.clients[via].session_id
        assert session_id is not None
        socket = self._open(player, sessionType=self.type, sessionId=session_id)
        expected = self.model.join_private(client, socket.label if socket else "", session_id)
        assert (socket is None) == (expected is None), (
            f"join_private({client}, via={via}): the relay {'refused' if socket is None else 'accepted'} it, "
            f"the model says it must be {'refused' if expected is None else 'accepted'}")
        if socket is not None:
            player.socket = socket
            player.joined(private=True, session_id=session_id)
        self._check(f"join_private({client}, via={via})", expected or {}, [])

    @precondition(lambda self: self.can("knows_member_id"))
    @rule(client=_who("knows_member_id"))
    def rejoin(self, client: str) -> None:
        """Connect again with ``memberId=M``: takes over from a socket still open (which is told
        CONNECTION_OVERWRITE, then closed), or comes back after a drop. Refused once M has no live
        session (it left before the start, or the session ended)."""
        player = self.clients[client]
        assert player.member_id is not None
        old = player.socket
        socket = self._open(player, memberId=player.member_id)
        expected = self.model.rejoin(client, socket.label if socket else "")
        assert (socket is None) == (expected is None), (
            f"rejoin({client}): the relay {'refused' if socket is None else 'accepted'} it, the model says it "
            f"must be {'refused' if expected is None else 'accepted'}")
        if socket is None:
            self._check(f"rejoin({client})", {}, [])
            return
        player.socket = socket
        if old is not None:
            player.stale.append(old)
        self._check(f"rejoin({client})", expected or {}, [])
        finished = [self._close(player, stale) for stale in player.stale]
        player.stale = []
        self._check(f"closing {client}'s overwritten socket", {}, finished)

    # ---- acting -------------------------------------------------------------------------------
    @precondition(lambda self: self.can("open"))
    @rule(client=_who("open"))
    def send(self, client: str) -> None:
        """SEND_MESSAGE with a fresh payload."""
        self._send(client, pinned=False)

    @precondition(lambda self: self.can("open"))
    @rule(client=_who("open"))
    def pin(self, client: str) -> None:
        """SEND_MESSAGE with ``pinned: true``."""
        self._send(client, pinned=True)

    def _send(self, client: str, pinned: bool) -> None:
        player = self.clients[client]
        assert player.socket is not None
        self.sent += 1
        payload = f"{client}-{self.sent}"
        body: dict[str, Any] = {"action": "SEND_MESSAGE", "payload": payload}
        if pinned:
            body["pinned"] = True
        expected = self.model.send(player.socket.label, payload, pinned)
        self._act(player, body, f"{'pin' if pinned else 'send'}({client})", expected)

    @precondition(lambda self: self.can("open"))
    @rule(client=_who("open"))
    def heartbeat(self, client: str) -> None:
        """HEARTBEAT with ``waitingFor`` what the client still lacks and the last pinned time it saw."""
        player = self.clients[client]
        assert player.socket is not None
        waiting = player.waiting_for()
        body = {"action": "HEARTBEAT", "waitingFor": waiting, "inclMessagesAfter": player.pinned_after}
        expected = self.model.heartbeat(player.socket.label, set(waiting), player.pinned_after)
        self._act(player, body, f"heartbeat({client})", expected)

    @precondition(lambda self: self.can("open"))
    @rule(client=_who("open"))
    def disconnect(self, client: str) -> None:
        """The client's socket closes (the network dropped it); ``rejoin`` brings the member back."""
        player = self.clients[client]
        assert player.socket is not None
        socket, player.socket = player.socket, None
        expected = self.model.disconnect(socket.label)
        self._check(f"disconnect({client})", expected, [self._close(player, socket)])

    @precondition(lambda self: self.can("open"))
    @rule(client=_who("open"))
    def end_session(self, client: str) -> None:
        """END_SESSION."""
        player = self.clients[client]
        assert player.socket is not None
        expected = self.model.end(player.socket.label)
        self._act(player, {"action": "END_SESSION"}, f"end_session({client})", expected)

    # ---- one fault at a time ------------------------------------------------------------------
    def _arm_wire(self, client: str, kind: str) -> None:
        player = self.clients[client]
        assert player.socket is not None
        self.faults += 1
        name = f"{kind}-{self.run}-{self.faults}"
        _, conn = player.socket.label.split("#")
        spec = {"name": name, "type": kind, "direction": "downstream", "count": 1,
                "match": {"opcode": "text", "tags": {"run": self.run, "client": client, "conn": conn}}}
        self.world.proxy.call(self.world.proxy.add_fault(parse_fault(spec)))
        self.armed = ("wire", name, player.socket.label)

    def _arm_stack(self, rule_: dict[str, Any]) -> None:
        self.faults += 1
        name = f"{rule_['type']}-{self.run}-{self.faults}"
        self.world.plan.add({"name": name, "count": 1, **rule_})
        self.armed = ("stack", name, None)

    @precondition(lambda self: self.armed is None and self.can("open"))
    @rule(client=_who("open"))
    def drop_next_frame_to(self, client: str) -> None:
        """The proxy drops the next frame the relay sends to this client's socket."""
        self._arm_wire(client, "drop")

    @precondition(lambda self: self.armed is None and self.can("open"))
    @rule(client=_who("open"))
    def duplicate_next_frame_to(self, client: str) -> None:
        """The proxy delivers the next frame to this client's socket twice."""
        self._arm_wire(client, "duplicate")

    @precondition(lambda self: self.armed is None)
    @rule()
    def fail_next_stream_invocation(self) -> None:
        """The next sessions-stream invocation runs, then is reported failed: the batch is retried."""
        self._arm_stack({"seam": "invocation", "type": "error_after",
                         "match": {"function": "StreamFunction", "source": "stream"}})

    @precondition(lambda self: self.armed is None)
    @rule(error=st.sampled_from(("ThrottlingException", "ProvisionedThroughputExceededException")))
    def throttle_next_write(self, error: str) -> None:
        """The next write to the store (any function) is refused with ``error`` (the SDK retries it)."""
        self._arm_stack({"seam": "store", "type": error, "match": {
            "operation": ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"]}})

    # ---- end of an example --------------------------------------------------------------------
    def teardown(self) -> None:
        """Close every socket, let the stack go quiet, disarm: the next example starts clean."""
        finished = []
        for player in self.clients.values():
            for socket in [*player.stale, *([player.socket] if player.socket else [])]:
                with contextlib.suppress(KeyError):
                    finished.append(self._close(player, socket))
            player.socket, player.stale = None, []
        self._disarm()
        self.world.settle(finished)


@dataclass
class Outcome:
    """One Hypothesis run of the machine: its finding ("" when it passed), examples, seconds, and the
    failing example's script (``state = RelayMachine()``, the steps, ``state.teardown()``)."""

    failed: str
    examples: int
    seconds: float
    script: list[str]

    @property
    def steps(self) -> int:
        return sum(1 for line in self.script if line.startswith("state.") and line != "state.teardown()")


def run_machine(world: RelayWorld, options: settings) -> Outcome:
    """Run RelayMachine on ``world``; the finding, if any, with the script Hypothesis printed for it."""
    lines: list[str] = []
    first = next(RelayMachine._runs)
    started = time.monotonic()
    failed = ""
    with use_world(world), with_reporter(lambda text: lines.extend(str(text).splitlines())):
        try:
            run_state_machine_as_test(RelayMachine, settings=options)
        except Exception as exc:  # the machine's finding (AssertionError, or whatever the relay made it raise)
            failed = f"{type(exc).__name__}: {exc!s}"
            lines.extend(line for note in getattr(exc, "__notes__", []) for line in str(note).splitlines())
    seconds = time.monotonic() - started
    script = [line for line in lines if line.startswith("state")]
    return Outcome(failed, next(RelayMachine._runs) - first - 1, seconds, script)
