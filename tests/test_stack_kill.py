"""The process seam's ``kill``: the run's supervisor (the embedded target) SIGKILLs the stack mid-run
and restarts it on the same ports and store; players rejoin by memberId; stream event sources
resume from their checkpoint; Ctrl-C during the downtime leaves nothing behind; and a relay that
keeps state in memory instead of the store is caught."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.local_target import _children
from harness.stack import dynamodb as local_ddb
from harness.stack.logs import StackLog
from harness.stack.runtime import Invocation
from harness.stack.stream_source import StreamCheckpoints, StreamEventSource, StreamMapping
from harness.stack.streams import StreamReader
from harness.stack.template import TableSpec
from tests.planted import planted_relay
from tests.stack_support import wait_until

ROOT = Path(__file__).resolve().parent.parent


def _kill_profile(folder: Path, at: float, downtime: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kill.toml"
    extra = f"\nfor = {downtime}" if downtime is not None else ""
    path.write_text(f'description = "one kill"\n\n[[fault]]\nname = "stack-killed"\nseam = "process"\n'
                    f'type = "kill"\nat = {at}{extra}\n')
    return path


def _locust(run_dir: Path, profile: Path, seconds: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", "scenarios/relay.py", "--headless", "-u", "8", "-r", "8",
            "-t", f"{seconds}s", "--chaos-profile", str(profile), "--seed", "1", "--run-dir", str(run_dir), *extra]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _failed(run_dir: Path) -> dict[str, list[str]]:
    results = json.loads((run_dir / "results.json").read_text())
    return {c["name"]: [v["message"] for v in c["violations"]][:3] for c in results["checks"] if c["status"] == "fail"}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A 13 s run of the reference relay whose stack is killed 6 s in and restarted at once."""
    folder = tmp_path_factory.mktemp("killed")
    run_dir = folder / "run"
    done = subprocess.run(_locust(run_dir, _kill_profile(folder, 6), 13), cwd=ROOT, capture_output=True, text=True,
                          timeout=150)
    return run_dir, done


def test_a_killed_stack_comes_back_and_players_rejoin_by_member_id(killed_run):
    run_dir, done = killed_run
    assert (done.returncode, _failed(run_dir)) == (0, {}), done.stderr[-2000:]
    kills = [f for f in _jsonl(run_dir / "faults.jsonl") if f["fault"] == "kill"]
    assert [(k["seam"], k["target"], k["rule"]["id"]) for k in kills] == [("process", {"scope": "stack"},
                                                                           "stack-killed")]
    [restart] = json.loads((run_dir / "run.json").read_text())["stack_restarts"]
    assert restart["killed_t"] == kills[0]["t"] < restart["ready_t"]
    history = _jsonl(run_dir / "history.jsonl")
    ended = {r["client"] for r in history if r["op"] == "close" and r["phase"] == "info"
             and kills[0]["t"] <= r["t"] <= restart["ready_t"]}
    # A rejoin that succeeded after the kill reached the new stack (the old one was gone), even when it
    # was answered a moment before the supervisor saw the new stack's ready file (ready_t).
    back = {r["client"] for r in history if r["op"] == "rejoin" and r["phase"] == "invoke"
            and r["t"] >= restart["killed_t"] and r["msg"].get("memberId") == r.get("member")
            and any(o["op"] == "rejoin" and o["phase"] == "ok" and o["conn"] == r["conn"] and o["client"] == r["client"]
                    for o in history)}
    # Most players whose socket the kill ended came back by memberId (others may have ended their
    # session meanwhile, or joined a new one when the stack was not back within their rejoin budget).
    assert len(ended) >= 6 and len(back & ended) >= len(ended) // 2, (ended, back)


def test_the_restarted_stack_is_a_new_process_on_the_same_ports_and_store(killed_run):
    run_dir, _ = killed_run
    [restart] = json.loads((run_dir / "run.json").read_text())["stack_restarts"]
    assert None not in restart["pids"] and restart["pids"][0] != restart["pids"][1]
    first, second = (json.loads((run_dir / name).read_text()) for name in ("stack.json", "stack-restart-1.json"))
    keys = ("websocket", "http", "management", "dynamodb", "faults_started_at")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    # Sessions that started before the kill were rejoined after it (the new stack found their members
    # in the store), and are in the store the run scanned at its end unless they ended meanwhile.
    history = _jsonl(run_dir / "history.jsonl")
    before = {r["msg"]["sessionId"] for r in history
              if r["op"] == "recv" and (r.get("msg") or {}).get("type") == "SESSION_CONNECT"
              and r["t"] < restart["killed_t"]}
    rejoined_ok = {(r["client"], r["conn"]) for r in history if r["op"] == "rejoin" and r["phase"] == "ok"}
    rejoined = {r["msg"].get("sessionId") for r in history if r["op"] == "rejoin" and r["phase"] == "invoke"
                and r["t"] >= restart["killed_t"] and (r["client"], r["conn"]) in rejoined_ok}
    ended = {r["session"] for r in history if r["op"] == "end" and r.get("session")}
    stored = {item["id"] for item in json.loads((run_dir / "store.json").read_text())["tables"]["SessionsTable"]}
    assert before & rejoined and before - ended and (before - ended) & stored, (before, rejoined, ended, stored)


class _Recorder:
    """A stream function that records each record's key."""

    def __init__(self) -> None:
        self.spec = SimpleNamespace(logical_id="Recorder", name="Recorder")
        self.keys: list[str] = []
        self.delivered = threading.Event()

    def invoke(self, event: dict[str, Any], queued_ms: float = 0.0) -> Invocation:
        self.keys += [record["dynamodb"]["Keys"]["id"]["S"] for record in event["Records"]]
        self.delivered.set()
        return Invocation("r", "Recorder")


def test_a_stream_source_resumes_from_its_checkpoint_like_lambdas_event_source_mapping(local_dynamodb, tmp_path):
    client = local_ddb.client(local_dynamodb.endpoint)
    spec = TableSpec("T", "kill-checkpoints", [{"AttributeName": "id", "KeyType": "HASH"}],
                     [{"AttributeName": "id", "AttributeType": "S"}], "NEW_AND_OLD_IMAGES", None)
    arn = local_ddb.create_tables(client, [spec])[spec.name]
    streams = local_ddb.client(local_dynamodb.endpoint, "dynamodbstreams")
    checkpoints = tmp_path / "checkpoints.json"

    def source() -> tuple[StreamEventSource, _Recorder]:
        function = _Recorder()
        mapping = StreamMapping(function=function, stream_arn=arn, starting_position="LATEST")  # type: ignore[arg-type]
        return StreamEventSource(mapping, StreamReader(streams, arn), StackLog(),
                                 checkpoints=StreamCheckpoints(checkpoints)), function

    client.put_item(TableName=spec.name, Item={"id": {"S": "before-first-start"}})
    first, seen = source()
    first.start()
    client.put_item(TableName=spec.name, Item={"id": {"S": "handled"}})
    # Handled, and its position kept (the reader moves on when it polls, the checkpoint once it is handled).
    wait_until(lambda: seen.keys == ["handled"] and json.loads(checkpoints.read_text())[arn] == first.reader.last_seen,
               what="the first record handled and checkpointed")
    first.stop()
    first.join(timeout=10)
    client.put_item(TableName=spec.name, Item={"id": {"S": "written-while-down"}})
    second, seen_again = source()
    second.start()
    try:
        wait_until(lambda: seen_again.keys, what="the backlog")
        # LATEST applies to a first start only: the restarted source neither skips nor repeats.
        assert seen_again.keys == ["written-while-down"]
    finally:
        second.stop()


def test_up_alone_says_it_does_not_carry_out_kills_and_goes_on(tmp_path):
    ready = tmp_path / "ready.json"
    up = subprocess.Popen([sys.executable, "-m", "harness", "up", "--quiet", "--profile",
                           str(_kill_profile(tmp_path, 1)), "--ready-file", str(ready)],
                          cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        first = up.stderr.readline()
        endpoints = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), timeout=60, what="up")
        assert endpoints["faults_started_at"] and up.poll() is None
    finally:
        up.terminate()
        _, rest = up.communicate(timeout=30)
    assert "kill 'stack-killed' (at 1 s) is carried out by the run's supervisor" in first
    assert "kill" not in rest


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in _children(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_while_the_stack_is_down_leaves_no_process_behind(tmp_path):
    run_dir = tmp_path / "run"
    locust = subprocess.Popen(_locust(run_dir, _kill_profile(tmp_path, 2, downtime=60), 40), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (run_dir / "faults.jsonl").exists() and "kill" in (run_dir / "faults.jsonl").read_text(),
                   timeout=60, what="the kill")
        started = _descendants(locust.pid)
        assert len(started) >= 2  # the store's process and the proxy's at least (the stack is down)
        locust.send_signal(signal.SIGINT)
        _, err = locust.communicate(timeout=60)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait()
    assert not [pid for pid in started if _alive(pid)], err[-2000:]
    assert json.loads((run_dir / "run.json").read_text())["stack_restarts"][0]["ready_t"] is None
    assert (run_dir / "results.json").exists()


def test_a_relay_that_keeps_members_in_memory_is_caught_by_a_kill(tmp_path):
    template = planted_relay(tmp_path / "relay", "planted_relay", {"WebSocketFunction": "rejoin_from_memory.handler"})
    run_dir = tmp_path / "run"
    done = subprocess.run(_locust(run_dir, _kill_profile(tmp_path, 5), 9, "--template", str(template)), cwd=ROOT,
                          capture_output=True, text=True, timeout=150)
    failed = _failed(run_dir)
    assert done.returncode == 1 and {"client_errors", "health"} <= set(failed), (failed, done.stderr[-2000:])
    assert any("500 answer to a well-formed $connect" in m for m in failed["client_errors"])
