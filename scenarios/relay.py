"""Players of a multiplayer game on a Simple Relay: ``locust -f scenarios/relay.py``.

With no ``--host`` the embedded local stack and the chaos proxy come up by themselves (torn down
at quit) and the players go through the proxy; ``--host ws://...`` or ``wss://...`` targets
anything else, a real AWS deployment included (add ``--ping-url``). ``--chaos-profile`` and
``--seed`` apply a timeline of faults. Every run writes a folder under ``reports/``.

Users: public matchmakers who chat, private hosts and their guests, reconnectors, enders.
Stats appear under request type ``WS``: connect, time to SESSION_CONNECT, message fan-out
(send -> each member's receipt, from the payload's timestamp), heartbeat round trip, reconnect.
"""

from __future__ import annotations

import itertools
import os
import queue
import random

from locust import User, between, events, task

from harness.client import ClientTimings, RelayClient
from harness.locust_run import RUN, install

install()

SESSION_TYPE = "locust"
_private_sessions: queue.Queue[str] = queue.Queue()
_ids = itertools.count()


class RelayUser(User):
    """One player: a RelayClient whose client id survives rejoins and new sessions."""

    abstract = True
    wait_time = between(0.5, 2.0)
    join_timeout = 30.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        client_id = f"{os.getpid()}-{type(self).__name__}-{next(_ids)}"
        timings = ClientTimings(heartbeat_interval=options.heartbeat_interval,
                                fast_heartbeat_interval=min(1.5, options.heartbeat_interval))
        self.client = RelayClient(self.environment.host, RUN.history, client_id, ping_url=options.ping_url or None,
                                  timings=timings, metric=self._metric)
        self.session_size = options.session_size
        self.join()

    def on_stop(self) -> None:
        self.client.close()

    def _metric(self, name: str, milliseconds: float, error: str | None) -> None:
        self.environment.events.request.fire(request_type="WS", name=name, response_time=milliseconds,
                                             response_length=0, exception=RuntimeError(error) if error else None,
                                             context={})

    def join(self) -> None:
        self.client.fresh_session()
        if self.client.connect(SESSION_TYPE, self.session_size):
            self.client.wait_for("SESSION_CONNECT", self.join_timeout)

    def in_session(self) -> bool:
        """True when playing; a player whose session ended or was lost for good joins a new one."""
        client = self.client
        lost = client.ws is None and (not client.started or client.rejoins >= client.timings.max_rejoins)
        if client.stopped or lost:
            self.join()
            return False
        return client.started


class PublicPlayer(RelayUser):
    weight = 6

    @task(5)
    def chat(self) -> None:
        if self.in_session():
            self.client.send_message(f"gg {random.randrange(1000)}")

    @task(1)
    def pin_board(self) -> None:
        if self.in_session():
            self.client.send_message("board state", pinned=True)


class PrivateHost(RelayUser):
    weight = 1

    def join(self) -> None:
        self.client.fresh_session()
        if self.client.connect(SESSION_TYPE, 2, private=True) and self.client.wait_for(
                "PRIVATE_SESSION_PENDING", self.join_timeout):
            _private_sessions.put(self.client.session_id)
            self.client.wait_for("SESSION_CONNECT", self.join_timeout)

    @task
    def chat(self) -> None:
        if self.in_session():
            self.client.send_message("private hello")


class PrivateGuest(RelayUser):
    weight = 1

    def join(self) -> None:
        self.client.fresh_session()
        try:
            session_id = _private_sessions.get(timeout=self.join_timeout)
        except queue.Empty:
            return
        if self.client.connect(SESSION_TYPE, session_id=session_id):
            self.client.wait_for("SESSION_CONNECT", self.join_timeout)

    @task
    def chat(self) -> None:
        if self.in_session():
            self.client.send_message("private reply")


class Reconnector(RelayUser):
    weight = 1

    @task(3)
    def chat(self) -> None:
        if self.in_session():
            self.client.send_message("still here")

    @task(1)
    def drop_and_rejoin(self) -> None:
        if self.in_session():
            self.client.rejoin()


class Ender(RelayUser):
    weight = 1

    @task(4)
    def chat(self) -> None:
        if self.in_session():
            self.client.send_message("last words")

    @task(1)
    def end(self) -> None:
        if self.in_session():
            self.client.end_session()
            self.client.wait_for("SESSION_END", 10)


@events.test_start.add_listener
def _announce(environment, **_):
    if RUN.run_dir is not None:
        print(f"relay-harness: players go to {environment.host}", flush=True)


# A chaos profile's [join_storm] table releases players into one (type, size) at the same instant.
from harness.join_storm import install as install_join_storm  # noqa: E402

install_join_storm(events)
