"""The protocol-rule checkers (END_SESSION, recovery, clean-up during play, fan-out past a gone
socket): hand-made histories that must pass and must fail, then real runs in which a planted bug
(tests/fixtures/planted_bugs) is caught and the reference relay stays clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.checkers import fanout, live_cleanup, recovery, session_end
from harness.checkers.model import Run
from tests.planted import planted_relay
from tests.test_checkers import got, joined, r, sent


def run(history, **logs):
    """A Run of these records in list order (helpers build some records before the ones they follow)."""
    return Run([{**record, "mono": i / 1e6} for i, record in enumerate(history)], **logs)


def msg(client, kind, t, conn=1, session="S", via=None, **fields):
    return r(client, "recv", "ok", t, conn=conn, session=session, msg={"type": kind, **fields}, via=via)


def later(t=60_000):
    """A record that carries the history past every deadline."""
    return r("z", "ping", "ok", t)


def wire(client, kind, t, direction, pids=None):
    target = {"conn": f"/?client={client}#0", "direction": direction, "frame": 3}
    if pids is not None:
        target["pids"] = pids
    return {"t": t, "seam": "wire", "fault": kind, "target": target, "params": {}, "rule": {"id": kind, "seq": 1}}


def _messages(result):
    return [f.message for f in result.violations]


# ---- END_SESSION -------------------------------------------------------------------------------
def ended(b_after_end):
    """a and b play in S; a ends it at 1000 and is told at 1100; b's records after the end are given."""
    return [*joined("a", "S", 0, 0), *joined("b", "S", 1, 20), r("a", "end", "invoke", 1000, session="S"),
            r("a", "end", "ok", 1001, session="S"), msg("a", "SESSION_END", 1100), r("a", "close", "invoke", 1101),
            *b_after_end, later()]


def test_session_end_passes_when_every_member_is_told_and_nothing_follows():
    result = session_end.check(run(ended([msg("b", "SESSION_END", 1120), r("b", "close", "invoke", 1121)])))
    assert result.violations == [] and result.checked == 3  # two members told, one session closed


def test_session_end_catches_a_member_never_told():
    result = session_end.check(run(ended([r("b", "close", "invoke", 9000)])))
    assert _messages(result) == ["b was in session S when a ended it, and got no SESSION_END within 5 s"]


def test_session_end_takes_invalid_connection_only_in_the_race_window():
    told = session_end.check(run(ended([msg("b", "INVALID_CONNECTION", 1500, session="S")])))
    assert told.violations == []
    late = session_end.check(run(ended([msg("b", "INVALID_CONNECTION", 4000, session="S")])))
    assert "answered INVALID_CONNECTION 3.0 s later" in _messages(late)[0]


def test_session_end_explains_a_lost_notice_by_a_fault_and_skips_a_member_that_left():
    lost = run(ended([r("b", "close", "invoke", 9000)]), faults=[wire("b", "drop", 1050, "downstream")])
    result = session_end.check(lost)
    assert result.violations == [] and len(result.explained) == 1
    left = session_end.check(run(ended([r("b", "close", "invoke", 1200)])))
    assert left.violations == [] and left.checked == 2  # the ender told, the session closed


def test_session_end_catches_messages_relayed_after_the_end():
    in_flight = [*sent("b", "b-0", 1500), got("b", "b-0", 1520)]
    assert session_end.check(run(ended([*in_flight, msg("b", "SESSION_END", 1600)]))).violations == []
    after = [*sent("b", "b-1", 3000), got("b", "b-1", 3010), r("b", "close", "invoke", 9000)]
    messages = _messages(session_end.check(run(ended(after))))
    assert ("1 message(s) sent in session S after it ended (SESSION_END) still reached b; the first, b-1, was sent "
            "1.9 s after") in messages


def test_session_end_ignores_an_end_the_relay_refused():
    history = [*joined("a", "S", 0, 0), *joined("b", "S", 1, 20), r("a", "end", "invoke", 1000, session="S"),
               r("a", "end", "ok", 1001, session="S"), msg("a", "INVALID_CONNECTION", 1100), later()]
    assert session_end.check(run(history)).checked == 0


# ---- recovery ----------------------------------------------------------------------------------
def beat(client, t, waiting, conn=1, session=None):
    return r(client, "heartbeat", "invoke", t, conn=conn, session=session,
             msg={"action": "HEARTBEAT", "inclMessagesAfter": 0, "waitingFor": waiting})


def waiting_player(answer_at_3000):
    """a joins a public session; b's SESSION_CONNECT at 2000 shows S started; a asks at 1000 and 3000."""
    return [r("a", "connect", "invoke", 0, msg={"sessionType": "game", "targetNumMembers": "2"}),
            r("a", "connect", "ok", 5), beat("a", 1000, ["CONNECTION", "SESSION_CONNECT"]),
            msg("a", "HEARTBEAT", 1010, session=None), msg("a", "CONNECTION", 1010, via="HEARTBEAT", session=None,
                                                           memberId="m-a"),
            *joined("b", "S", 1, 1500)[1:], beat("a", 3000, ["SESSION_CONNECT"], session=None),
            msg("a", "HEARTBEAT", 3010, session=None), *answer_at_3000, *sent("b", "b-0", 4000),
            got("a", "b-0", 4010, session=None)]


def test_recovery_passes_when_the_answer_brings_what_was_asked_for():
    answer = [msg("a", "SESSION_CONNECT", 3010, via="HEARTBEAT", sessionId="S", memberNum=0,
                  memberPresence=[True, True])]
    result = recovery.check(run(waiting_player(answer)))
    assert result.violations == [] and result.checked == 2  # CONNECTION at 1000, SESSION_CONNECT at 3000


def test_recovery_catches_an_answer_without_session_connect_once_the_session_started():
    result = recovery.check(run(waiting_player([])))
    assert _messages(result) == ["a asked for SESSION_CONNECT with HEARTBEAT waitingFor 1 time(s) on socket 1 and "
                                 "no answer brought it (session S had already started)"]


def test_recovery_catches_a_missing_connection_and_skips_ambiguous_answers():
    history = [r("a", "connect", "ok", 5), beat("a", 1000, ["CONNECTION"]), msg("a", "HEARTBEAT", 1010)]
    assert "asked for CONNECTION" in _messages(recovery.check(run(history)))[0]
    two_asked = [r("a", "connect", "ok", 5), beat("a", 1000, ["CONNECTION"]), beat("a", 2500, ["CONNECTION"]),
                 msg("a", "HEARTBEAT", 2510)]
    assert recovery.check(run(two_asked)).checked == 0


@pytest.mark.parametrize(("guest_at", "violations"), [(5000, 1), (1200, 0)])
def test_recovery_expects_private_session_pending_while_the_session_waits(guest_at, violations):
    history = [r("h", "connect", "invoke", 0, msg={"sessionType": "game", "targetNumMembers": "2", "private": "true"}),
               r("h", "connect", "ok", 5), beat("h", 1000, ["PRIVATE_SESSION_PENDING"]), msg("h", "HEARTBEAT", 1010),
               r("g", "connect", "invoke", guest_at, msg={"sessionType": "game", "sessionId": "P"}),
               msg("h", "SESSION_CONNECT", guest_at + 100, session="P", sessionId="P", memberNum="0")]
    result = recovery.check(run(history))
    assert len(result.violations) == violations and result.checked == violations


# ---- clean-up during play ----------------------------------------------------------------------
CLEANUP = [{"t": 5000, "function": "CleanupFunction", "request_id": "x", "duration_ms": 3, "outcome": "ok"}]


def playing(ending, beats=(4000, 11000)):
    return [*joined("a", "S", 0, 0), *[msg("a", "HEARTBEAT", t) for t in beats], ending, later()]


def test_live_cleanup_catches_a_live_socket_closed_or_its_session_ended():
    closed = live_cleanup.check(run(playing(r("a", "close", "info", 15000)), invocations=CLEANUP))
    assert closed.checked == 1
    assert _messages(closed) == ["a's socket 1 got socket closed by the relay 4.0 s after its HEARTBEAT was answered "
                                 "(session S, no END_SESSION)"]
    ended_session = live_cleanup.check(run(playing(msg("a", "SESSION_END", 15000)), invocations=CLEANUP))
    assert "got SESSION_END" in _messages(ended_session)[0]


def test_live_cleanup_passes_expiry_after_silence_member_ends_and_explained_resets():
    silent = live_cleanup.check(run(playing(r("a", "close", "info", 30000)), invocations=CLEANUP))
    assert silent.violations == [] and silent.checked == 1
    history = playing(msg("a", "SESSION_END", 15000))
    history.insert(-2, r("b", "end", "invoke", 14000, session="S"))
    assert live_cleanup.check(run(history, invocations=CLEANUP)).violations == []
    reset = live_cleanup.check(run(playing(r("a", "close", "info", 15000)), invocations=CLEANUP,
                                   faults=[wire("a", "reset", 14900, "upstream")]))
    assert reset.violations == [] and len(reset.explained) == 1


def test_live_cleanup_is_not_exercised_without_a_cleanup_run():
    assert live_cleanup.check(run(playing(r("a", "close", "invoke", 15000)))).checked == 0


# ---- fan-out past a gone socket ----------------------------------------------------------------
def four_playing(c_got):
    """a, b, c, d in S; d's socket goes at 1000; a sends at 1200."""
    history = [*joined("a", "S", 0, 0, size=4), *joined("b", "S", 1, 0, size=4), *joined("c", "S", 2, 0, size=4),
               *joined("d", "S", 3, 0, size=4), r("d", "close", "info", 1000), *sent("a", "a-0", 1200),
               got("a", "a-0", 1210), got("b", "a-0", 1210)]
    if c_got:
        history.append(got("c", "a-0", 1210))
    return [*history, *[r(c, "close", "invoke", 9000) for c in "abc"], later()]


def test_fanout_passes_when_the_others_still_get_the_message():
    result = fanout.check(run(four_playing(c_got=True)))
    assert result.violations == [] and result.checked == 3


def test_fanout_catches_a_member_left_out_unless_a_fault_hit_that_message():
    assert _messages(fanout.check(run(four_playing(c_got=False)))) == [
        "a-0 from a never reached c, sent while d's socket went away in session S"]
    other = fanout.check(run(four_playing(c_got=False), faults=[wire("c", "drop", 1300, "downstream", ["x-9"])]))
    assert len(other.violations) == 1
    this = fanout.check(run(four_playing(c_got=False), faults=[wire("c", "drop", 1300, "downstream", ["a-0"])]))
    assert this.violations == [] and len(this.explained) == 1


def test_fanout_is_not_exercised_when_no_socket_went_away():
    history = [*joined("a", "S", 0, 0), *joined("b", "S", 1, 0), *sent("a", "a-0", 1200), later()]
    assert fanout.check(run(history)).checked == 0


def test_protocol_checkers_take_numbers_sent_as_strings():
    history = [*joined("a", "S", 0, 0), *joined("b", "S", 1, 20), *sent("a", "a-0", 100),
               r("b", "recv", "ok", 130, session="S", pid="a-0",
                 msg={"type": "MESSAGE", "payload": json.dumps({"pid": "a-0"}), "time": "123", "memberNum": "0"}),
               msg("b", "SESSION_CONNECT", 140, sessionId="S", memberNum="1", memberPresence=[True, True]), later()]
    for check in (session_end.check, recovery.check, live_cleanup.check, fanout.check):
        assert check(run(history)).violations == []


# ---- real runs: each planted bug is caught; the reference relay stays clean ------------------------
ROOT = Path(__file__).resolve().parent.parent
LOSE_JOIN_NOTICES = "".join(f"""
[[fault]]
type = "drop"
direction = "downstream"
probability = 0.5
match = {{ type = "{kind}" }}
window = {{ start = 0, end = 15 }}
""" for kind in ("CONNECTION", "PRIVATE_SESSION_PENDING", "SESSION_CONNECT"))
RESET_SOME_SOCKETS = """
[[fault]]
type = "reset"
direction = "upstream"
probability = {probability}
"""
# API Gateway's $disconnect may come late: meanwhile the relay still lists the gone socket, and a
# fan-out in its session meets the 410 (without it the window is the few ms before $disconnect runs).
LATE_DISCONNECT = """
[[fault]]
name = "late-disconnect"
seam = "invocation"
type = "latency"
probability = 1.0
params = { ms = 800 }
match = { route = "$disconnect" }
"""


def _locust(tmp_path: Path, *args: str, bug: str | None = None, profile: str | None = None) -> Run:
    """A real headless run of scenarios/relay.py; the Run its folder holds."""
    run_dir = tmp_path / "run"
    options = ["--headless", "-r", "20", "--seed", "1", "--run-dir", str(run_dir), "--heartbeat-interval", "3", *args]
    if profile:
        (tmp_path / "profile.toml").write_text(profile)
        options += ["--chaos-profile", str(tmp_path / "profile.toml")]
    if bug:
        template = planted_relay(tmp_path / "relay", "planted_bugs/src", {"WebSocketFunction": "planted.handler"},
                                 {"PLANTED_BUG": bug})
        options += ["--template", str(template)]
    result = subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/relay.py", *options], cwd=ROOT,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode in (0, 1) and (run_dir / "history.jsonl").exists(), result.stderr[-3000:]
    return Run.load(run_dir)


@pytest.mark.parametrize(("bugs", "checks", "args", "profile"), [
    # The clean-up closes a live socket only once the 30 s connection expiry has passed (~35 s in);
    # END_SESSION's bug shows within seconds and touches nothing the expiries do, so it shares that run.
    ("end_session_leaves,heartbeat_keeps_no_connection", (session_end.check, live_cleanup.check),
     ("-u", "20", "-t", "40s", "--short-expiry"), None),
    # The join notices are lost in the first seconds, and the HEARTBEATs asking for them come 3 s apart.
    ("ignores_waiting_for", (recovery.check,), ("-u", "12", "-t", "8s"), LOSE_JOIN_NOTICES),
    # A 410 in a fan-out needs a socket gone before the relay hears of it: resets, sessions of 4, a
    # $disconnect 0.8 s late (inside the checker's 1 s window), and only PublicPlayers, whose sessions
    # last (an Ender's END_SESSION closes every socket of its session: no member is left to judge).
    # Without these the bug fired 1-5 times in 30 s and was caught in 2 of 4 runs. Each late
    # $disconnect holds an instance (Lambda would start another): more slots keep the gateway from
    # queueing behind them, which would make the stack's lag excuse the losses.
    ("fan_out_stops_at_gone", (fanout.check,),
     ("-u", "24", "-t", "20s", "--session-size", "4", "--concurrency", "48", "PublicPlayer"),
     RESET_SOME_SOCKETS.format(probability=0.1) + LATE_DISCONNECT),
], ids=["end-session+live-cleanup", "recovery", "fan-out"])
def test_a_planted_bug_is_caught_in_a_real_run(tmp_path, bugs, checks, args, profile):
    """The other way, the reference relay under the same faults with these checkers exercised and
    passing, is the smoke run (tests/test_chaos.py)."""
    run = _locust(tmp_path, *args, bug=bugs, profile=profile)
    for check in checks:
        result = check(run)
        assert result.violations, f"{result.name} missed its bug ({result.checked} checked, " \
                                  f"{len(result.explained)} explained)"
