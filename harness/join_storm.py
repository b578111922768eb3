"""Join storms: players released at the same instant into the same public (type, size), repeatedly,
so that conditional joins really collide. A chaos profile switches one on::

    [join_storm]
    players = 6          # released together each round (a multiple of size, so every storm fills up)
    size = 3             # targetNumMembers they all ask for (3 or more: a session of 2 is also
                         # guarded by its open pointer, so a missing room condition hides there)
    rounds = 8
    every_s = 3          # seconds between the end of a round and the next
    start_s = 2          # seconds after the test starts
    hold_s = 1           # a matched player stays this long, then leaves

Each round, ``players`` RelayClients (named ``JoinStorm-<n>``, stable across runs) wait at a barrier,
then all open their sockets at once (no ``/ping`` first, so nothing staggers them); matched players
leave after ``hold_s``, unmatched ones after ``MATCH_TIMEOUT_S``; when the test stops, every storm
player still waiting leaves at once (the run's end does not wait out their timeouts). Their history
goes with everyone else's, so the membership, liveness and notifications checkers see every storm.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Any

from .client import RelayClient
from .history import History

MATCH_TIMEOUT_S = 10.0  # below the liveness bound, so a storm's stragglers are never a finding by themselves
_LIMITS = {"players": (2, 64), "size": (2, 32), "rounds": (1, 10_000), "every_s": (0, 3600), "start_s": (0, 3600),
           "hold_s": (0, 600)}


class StormError(ValueError):
    """An invalid [join_storm] table: the message names the key and the allowed values."""


@dataclass(frozen=True)
class StormSettings:
    players: int = 6
    size: int = 3
    rounds: int = 8
    every_s: float = 3.0
    start_s: float = 2.0
    hold_s: float = 1.0
    session_type: str = "storm"


def parse_storm(raw: Any) -> StormSettings:
    """Validate a profile's ``[join_storm]`` table. Raises StormError with a one-line reason."""
    if not isinstance(raw, dict):
        raise StormError("[join_storm] must be a table such as {players = 6, size = 3}")
    known = [f.name for f in fields(StormSettings)]
    unknown = set(raw) - set(known)
    if unknown:
        raise StormError(f"[join_storm] has no key {sorted(unknown)[0]!r}; keys are {', '.join(known)}")
    values: dict[str, Any] = {}
    for key, (low, high) in _LIMITS.items():
        if key in raw:
            value = raw[key]
            whole = key in ("players", "size", "rounds")
            if isinstance(value, bool) or not isinstance(value, int | float) or (whole and value != int(value)) \
                    or not low <= value <= high:
                kind = "a whole number" if whole else "a number"
                raise StormError(f"[join_storm] {key} must be {kind} from {low} to {high}, not {value!r}")
            values[key] = int(value) if whole else float(value)
    if "session_type" in raw:
        if not isinstance(raw["session_type"], str) or not raw["session_type"]:
            raise StormError("[join_storm] session_type must be a non-empty string")
        values["session_type"] = raw["session_type"]
    settings = StormSettings(**values)
    if settings.players % settings.size:
        raise StormError(f"[join_storm] players ({settings.players}) must be a multiple of size ({settings.size}), "
                         "so that every storm fills its sessions")
    return settings


class JoinStorm:
    """Runs the rounds in a background thread (a greenlet under Locust) until done or stopped."""

    def __init__(self, settings: StormSettings, url: str, history: History) -> None:
        self.settings = settings
        self.url = url
        self.history = history
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="join-storm", daemon=True)
        self._lock = threading.Lock()
        self.matched = 0  # players that got SESSION_CONNECT, over all rounds
        self._playing: set[RelayClient] = set()  # the current round's clients, closed at once by stop()

    def start(self) -> JoinStorm:
        self._thread.start()
        return self

    def stop(self, timeout: float = MATCH_TIMEOUT_S + 5) -> None:
        """End the storm: no new round, and the players of the current one leave now (a player waiting
        for SESSION_CONNECT or holding its seat is closed); waits up to ``timeout`` seconds for them."""
        self.stopping.set()
        with self._lock:
            playing = list(self._playing)
        for client in playing:
            client.close()
        self._thread.join(timeout)

    def _run(self) -> None:
        if self.stopping.wait(self.settings.start_s):
            return
        for round_number in range(self.settings.rounds):
            self._round(round_number)
            if self.stopping.wait(self.settings.every_s):
                return

    def _round(self, round_number: int) -> None:
        players = self.settings.players
        barrier = threading.Barrier(players)
        threads = [threading.Thread(target=self._player, args=(barrier, round_number * players + i), daemon=True)
                   for i in range(players)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(MATCH_TIMEOUT_S + self.settings.hold_s + 30)

    def _player(self, barrier: threading.Barrier, ordinal: int) -> None:
        client = RelayClient(self.url, self.history, f"JoinStorm-{ordinal}")
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            return
        with self._lock:
            if self.stopping.is_set():
                return
            self._playing.add(client)
        try:
            # A stop() while the socket was opening closed the attempt before this one, or waits for it.
            if client.connect(self.settings.session_type, self.settings.size) and not self.stopping.is_set() \
                    and client.wait_for("SESSION_CONNECT", MATCH_TIMEOUT_S):
                with self._lock:
                    self.matched += 1
                self.stopping.wait(self.settings.hold_s)
        finally:
            client.close()
            with self._lock:
                self._playing.discard(client)


def install(events: Any) -> None:
    """Start the storm of the run's profile, if it has one, when the test starts (on the master or
    a lone process, never on workers); stop it when the test stops."""
    from .faults.profile import load_profile
    from .locust_run import RUN

    storms: list[JoinStorm] = []

    def start(environment: Any, **_: Any) -> None:
        from locust.runners import WorkerRunner

        options = environment.parsed_options
        if isinstance(environment.runner, WorkerRunner) or not options or not options.chaos_profile:
            return
        settings = load_profile(options.chaos_profile).join_storm
        if settings is not None:
            storms.append(JoinStorm(settings, environment.host, RUN.history).start())

    def stop(**_: Any) -> None:
        while storms:
            storms.pop().stop()

    events.test_start.add_listener(start)
    events.test_stop.add_listener(stop)
