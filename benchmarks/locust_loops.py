"""Two Locust users for scenario_benchmark.py, each sending as fast as its answers come back:
``BareEcho`` (websocket-client, send and receive, nothing else: the baseline) and ``ScenarioLoop``
(the scenario's RelayClient: payload ids, history records, metrics, heartbeats; its history is
written to a file once a second and at the end, as harness/locust_run.py does in a real run)."""

import json
import os
import tempfile
import threading
from pathlib import Path

import gevent.lock
import websocket
from locust import User, events, task

from harness.client import ClientTimings, RelayClient
from harness.history import History, HistoryFile

HISTORY = History()
_written = threading.Event()


@events.test_start.add_listener
def _write_history(environment, **_):
    if not any(user.__name__ == "ScenarioLoop" for user in environment.user_classes):
        return
    folder = tempfile.TemporaryDirectory()
    history_file = HistoryFile(Path(folder.name) / "history.jsonl")

    def flush():
        history_file.write(HISTORY.drain())

    def loop():
        while not _written.wait(1.0):
            flush()

    @events.test_stop.add_listener
    def _last(**_):
        _written.set()
        flush()
        history_file.close()
        folder.cleanup()

    threading.Thread(target=loop, daemon=True).start()


@events.init_command_line_parser.add_listener
def _arguments(parser):
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between a user's sends")


class PacedUser(User):
    abstract = True

    def wait_time(self):
        return self.environment.parsed_options.pace


class BareEcho(PacedUser):
    def on_start(self):
        # As the scenario's client does: text is still validated when decoded, in C.
        self.ws = websocket.create_connection(self.host, timeout=10, skip_utf8_validation=True)
        self.ws.recv()

    @task
    def echo(self):
        self.ws.send(json.dumps({"action": "SEND_MESSAGE", "payload": "x" * 64}))
        self.ws.recv()
        self.environment.events.request.fire(request_type="WS", name="echo", response_time=0, response_length=0,
                                             exception=None, context={})


class ScenarioLoop(PacedUser):
    def on_start(self):
        self.client = RelayClient(self.host, HISTORY, f"{os.getpid()}-{id(self)}", timings=ClientTimings(),
                                  metric=self._metric)
        self.client.connect("bench", 2)
        self.client.wait_for("SESSION_CONNECT", 10)
        # gevent's own semaphore (Locust runs on gevent): threading's, built on a Condition, cost the
        # benchmark 4 us per message that a real run, whose players do not wait for their answers, never pays.
        self.answered = gevent.lock.Semaphore(0)

    def _metric(self, name, ms, error):
        self.environment.events.request.fire(request_type="WS", name=name, response_time=ms, response_length=0,
                                             exception=None, context={})
        if name == "message fan-out":
            self.answered.release()

    @task
    def echo(self):
        self.client.send_message("x" * 20)
        self.answered.acquire(timeout=10)
