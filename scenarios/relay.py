"""Players of a multiplayer game on a Simple Relay: ``locust -f scenarios/relay.py``.

With no ``--host`` the embedded local stack and the chaos proxy come up by themselves (torn down
at quit) and the players go through the proxy; ``--host ws://...`` or ``wss://...`` targets
anything else, a real AWS deployment included (add ``--ping-url``). ``--chaos-profile`` and
``--seed`` apply a timeline of faults. Every run writes a folder under ``reports/``.

Users: public matchmakers who chat, private hosts and their guests, reconnectors, enders.
Stats appear under request type ``WS``: connect, time to SESSION_CONNECT, message fan-out
(send -> each member's receipt, from the payload's timestamp), heartbeat round trip, reconnect.

Replay: a player's name is ``<UserClass>-<ordinal>`` (``w<worker index>-`` first on a worker of a
distributed run), and every choice it makes (its next move, its waits, its message bodies) comes
from its own ``random.Random`` seeded from the run's seed and that name.
"""

from __future__ import annotations

import itertools
import queue
import random
import time
from collections import defaultdict

from locust import User, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from harness.client import ClientTimings, RelayClient
from harness.locust_run import RUN, install
from harness.run_shape import session_sizes

install()

SESSION_TYPE = "locust"
PIN_CHECK_S = 6.0  # a heartbeat this long after a newly seen pin: past the pinned checker's 5 s grace
CALM_S = 12.0  # a timed run sends no pin in its last seconds, so each session's latest pin gets checked
FINAL_CHECK_S = 3.0  # and every player heartbeats once this long before the end
PRIVATE_MAX = 3  # a host invites at most 2 guests: guests are as many as hosts, so bigger ones stay pending
_private_sessions: queue.Queue[str] = queue.Queue()
_ordinals: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def player_name(environment: Environment, user_class: str) -> str:
    """``<UserClass>-<ordinal>`` in spawn order within this process, ``w<index>-`` first on a worker."""
    runner = environment.runner
    prefix = f"w{runner.worker_index}-" if isinstance(runner, WorkerRunner) else ""
    return f"{prefix}{user_class}-{next(_ordinals[user_class])}"


def player_rng(seed: int, name: str) -> random.Random:
    """The player's own RNG. Seeding with a str hashes it with SHA-512 (documented for seed version 2),
    so it is the same in every run and process, unlike hash()."""
    return random.Random(f"relay-harness/{seed}/{name}")


class RelayUser(User):
    """One player: a RelayClient whose name survives rejoins and new sessions; ``moves`` are what it
    does in a session, (method name, weight), drawn by its own RNG."""

    abstract = True
    join_timeout = 30.0
    moves: tuple[tuple[str, int], ...] = (("chat", 1),)
    greeting = "hello"

    def on_start(self) -> None:
        options = self.environment.parsed_options
        name = player_name(self.environment, type(self).__name__)
        # The seed travels to workers in the master's spawn message; RUN.seed is only set on the master.
        self.rng = player_rng(options.seed, name)
        timings = ClientTimings(heartbeat_interval=options.heartbeat_interval,
                                fast_heartbeat_interval=min(1.5, options.heartbeat_interval))
        self.client = RelayClient(self.environment.host, RUN.history, name, ping_url=options.ping_url or None,
                                  timings=timings, metric=self._metric)
        self.session_sizes = session_sizes(options.session_size)  # checked when the run started
        run_time = getattr(options, "run_time", None)
        self.run_end = RUN.test_started + run_time if run_time and RUN.test_started is not None else None
        self._pin_seen = 0
        self._check_at: float | None = None
        self._final_check_at = self.run_end - FINAL_CHECK_S if self.run_end is not None else None
        self.join()

    def on_stop(self) -> None:
        self.client.close()

    def wait_time(self) -> float:
        return self.rng.uniform(0.5, 2.0)

    def _metric(self, name: str, milliseconds: float, error: str | None) -> None:
        self.environment.events.request.fire(request_type="WS", name=name, response_time=milliseconds,
                                             response_length=0, exception=RuntimeError(error) if error else None,
                                             context={})

    def session_size(self) -> int:
        """The size of the next session this player joins or hosts, drawn by its own RNG."""
        return self.rng.choice(self.session_sizes) if len(self.session_sizes) > 1 else self.session_sizes[0]

    def join(self) -> None:
        if self.client.connect(SESSION_TYPE, self.session_size()):
            self.client.wait_for("SESSION_CONNECT", self.join_timeout)

    def in_session(self) -> bool:
        """True when playing; a player whose session ended or was lost for good joins a new one (a
        rejoin in flight is not lost)."""
        client = self.client
        if client.lost:
            self.join()
            return False
        return client.attempt.started and client.attempt.ws is not None

    @task
    def play(self) -> None:
        """One move in the session: a pin check when one is due, else a move drawn by weight."""
        if not self.in_session():
            return
        if self._pin_check_due():
            self.client.heartbeat()
            return
        names, weights = zip(*self.moves, strict=True)
        getattr(self, self.rng.choices(names, weights)[0])()

    def _pin_check_due(self) -> bool:
        """A heartbeat (it carries ``inclMessagesAfter``) PIN_CHECK_S after a newly seen pinned
        message, and one FINAL_CHECK_S before a timed run ends: what pinned convergence is checked on."""
        now = time.monotonic()
        pinned = self.client.attempt.pinned_time
        if pinned and pinned != self._pin_seen:
            self._pin_seen, self._check_at = pinned, now + PIN_CHECK_S
        for due in ("_check_at", "_final_check_at"):
            at = getattr(self, due)
            if at is not None and now >= at:
                setattr(self, due, None)
                return True
        return False

    def calm(self) -> bool:
        """In a timed run's last CALM_S seconds: no more pins."""
        return self.run_end is not None and time.monotonic() >= self.run_end - CALM_S

    def chat(self) -> None:
        self.client.send_message(f"{self.greeting} {self.rng.randrange(1000)}")


class PublicPlayer(RelayUser):
    weight = 6
    moves = (("chat", 5), ("pin_board", 1))
    greeting = "gg"

    def pin_board(self) -> None:
        if self.calm():
            self.chat()
        else:
            self.client.send_message(f"board state {self.rng.randrange(1000)}", pinned=True)


class PrivateHost(RelayUser):
    weight = 1
    greeting = "private hello"

    def join(self) -> None:
        size = min(self.session_size(), PRIVATE_MAX)
        if self.client.connect(SESSION_TYPE, size, private=True) and self.client.wait_for(
                "PRIVATE_SESSION_PENDING", self.join_timeout):
            for _ in range(size - 1):  # one invitation per guest seat
                _private_sessions.put(self.client.attempt.session_id)
            self.client.wait_for("SESSION_CONNECT", self.join_timeout)


class PrivateGuest(RelayUser):
    weight = 1
    greeting = "private reply"

    def join(self) -> None:
        self.client.close()
        try:
            session_id = _private_sessions.get(timeout=self.join_timeout)
        except queue.Empty:
            return
        if self.client.connect(SESSION_TYPE, session_id=session_id):
            self.client.wait_for("SESSION_CONNECT", self.join_timeout)


class Reconnector(RelayUser):
    weight = 1
    moves = (("chat", 3), ("drop_and_rejoin", 1))
    greeting = "still here"

    def drop_and_rejoin(self) -> None:
        self.client.rejoin()


class Ender(RelayUser):
    weight = 1
    moves = (("chat", 4), ("end", 1))
    greeting = "last words"

    def end(self) -> None:
        self.client.end_session()
        self.client.wait_for("SESSION_END", 10)


@events.test_start.add_listener
def _announce(environment, **_):
    if RUN.run_dir is not None:
        print(f"relay-harness: players go to {environment.host}", flush=True)


# A chaos profile's [join_storm] table releases players into one (type, size) at the same instant.
from harness.join_storm import install as install_join_storm  # noqa: E402

install_join_storm(events)
