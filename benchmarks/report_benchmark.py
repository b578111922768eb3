"""How checking and reporting grow with the history: ``python benchmarks/report_benchmark.py``.

Writes synthetic run folders of about 10^4, 10^5 and 10^6 history records (sessions of two players
who join, chat, heartbeat, pin a message, reconnect, end the session, some private, with a few
deliveries lost to logged drops and store faults over half the run: ``write_run``) and runs
``relay-harness report`` on each in its own process, printing the wall time, the CPU time and the
peak memory, and the growth between sizes (linear growth: x10 per x10).
``--sizes 10000,100000`` picks other sizes.

``--replicate RUN_DIR`` checks copies of a real run folder instead (``replicate_run.py``: every
identity made distinct, about ``--concurrent`` copies overlapping in time), which exercises what a
synthetic history does not: faults, reconnects, rejoins, pinned messages, private sessions, stack
restarts. The source folder is only read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replicate_run import replicate


def write_run(run_dir: Path, records: int) -> int:
    """A synthetic run folder (history.jsonl, faults.jsonl, run.json) of sessions of two until about
    ``records`` history records; returns how many were written. Every session joins, chats and
    heartbeats; some also pin a message (every 2nd), lose a delivery to a logged drop (every 4th),
    reconnect a player (every 3rd), are private (every 10th) or end with END_SESSION (every 7th);
    store faults come every 100 ms over the first half of the run. What a correct relay under those
    faults would give: the report passes, with explained losses."""
    written = 0
    mono = 0.0
    faults: list[dict] = []
    with open(run_dir / "history.jsonl", "w", encoding="utf-8") as out:
        def put(**record: object) -> None:
            nonlocal written, mono
            mono += 0.001
            out.write(json.dumps({"mono": round(mono, 6), "conn": 1, **record}, separators=(",", ":")) + "\n")
            written += 1

        session = 0
        while written < records:
            t0 = 1_000_000 + session * 50  # sessions overlap in time, as in a busy run
            sid, players = f"S{session}", (f"a{session}", f"b{session}")
            private = session % 10 == 5
            for num, client in enumerate(players):
                member = f"m{client}"
                if private and num == 0:
                    query = {"sessionType": "bench", "targetNumMembers": "2", "private": "true"}
                elif private:
                    query = {"sessionId": sid}
                else:
                    query = {"sessionType": "bench", "targetNumMembers": "2"}
                put(t=t0 + 10 * num, client=client, op="connect", phase="invoke", msg=query)
                put(t=t0 + 10 * num + 5, client=client, op="connect", phase="ok")
                if private and num == 0:
                    put(t=t0 + 8, client=client, op="recv", phase="ok", member=member, session=sid,
                        msg={"type": "PRIVATE_SESSION_PENDING", "sessionId": sid, "targetNumMembers": 2})
                put(t=t0 + 20, client=client, op="recv", phase="ok", member=member, session=sid,
                    msg={"type": "SESSION_CONNECT", "sessionType": "bench", "sessionId": sid, "memberNum": num,
                         "memberPresence": [True, True]})
            for i in range(10):
                for num, sender in enumerate(players):
                    pid, t = f"{sender}-{i}", t0 + 100 + 200 * i
                    pinned = {"pinned": True} if session % 2 == 0 and i == 0 and num == 0 else {}
                    payload = json.dumps({"pid": pid, "ts": t, "body": "gg"})
                    put(t=t, client=sender, op="send", phase="invoke", member=f"m{sender}", session=sid, pid=pid,
                        msg={"action": "SEND_MESSAGE", "payload": payload, **pinned})
                    put(t=t + 1, client=sender, op="send", phase="ok", member=f"m{sender}", session=sid, pid=pid)
                    for receiver in players:
                        if session % 4 == 0 and i == 3 and num == 0 and receiver != sender:
                            faults.append({"t": t + 20, "seam": "wire", "fault": "drop", "target": {
                                "conn": f"/?client={receiver}&conn=1#0", "direction": "downstream",
                                "types": ["MESSAGE"], "pids": [pid]}, "params": {}, "rule": {"id": "lose"}})
                            continue
                        put(t=t + 30, client=receiver, op="recv", phase="ok", member=f"m{receiver}", session=sid,
                            pid=pid, msg={"type": "MESSAGE", "payload": payload, "time": t + 10, "memberNum": num,
                                          **pinned})
            conns = {client: 1 for client in players}
            if session % 3 == 1:  # b drops its socket and rejoins; a is told both
                a, b = players
                put(t=t0 + 2500, client=b, op="close", phase="invoke", member=f"m{b}", session=sid)
                put(t=t0 + 2501, client=b, op="close", phase="ok", member=f"m{b}", session=sid)
                put(t=t0 + 2530, client=a, op="recv", phase="ok", member=f"m{a}", session=sid,
                    msg={"type": "MEMBER_DISCONNECT", "memberNum": 1})
                put(t=t0 + 2550, client=b, conn=2, op="rejoin", phase="invoke", member=f"m{b}", session=sid,
                    msg={"memberId": f"m{b}", "sessionId": sid})
                put(t=t0 + 2580, client=b, conn=2, op="rejoin", phase="ok", member=f"m{b}", session=sid)
                put(t=t0 + 2600, client=a, op="recv", phase="ok", member=f"m{a}", session=sid,
                    msg={"type": "MEMBER_RECONNECT", "memberNum": 1})
                conns[b] = 2
            for client in players:
                for beat in range(4):
                    put(t=t0 + 1000 + 2000 * beat, client=client, conn=conns[client] if beat > 1 else 1,
                        op="heartbeat", phase="invoke", member=f"m{client}", session=sid,
                        msg={"action": "HEARTBEAT", "inclMessagesAfter": 0})
                    put(t=t0 + 1010 + 2000 * beat, client=client, conn=conns[client] if beat > 1 else 1,
                        op="heartbeat", phase="ok", member=f"m{client}", session=sid)
            if session % 7 == 3:
                ender = players[0]
                put(t=t0 + 9000, client=ender, op="end", phase="invoke", member=f"m{ender}", session=sid,
                    msg={"action": "END_SESSION"})
                put(t=t0 + 9001, client=ender, op="end", phase="ok", member=f"m{ender}", session=sid)
                for client in players:
                    put(t=t0 + 9020, client=client, conn=conns[client], op="recv", phase="ok", member=f"m{client}",
                        session=sid, msg={"type": "SESSION_END"})
            session += 1
    half = (session * 50) // 2
    faults += [{"t": 1_000_000 + t, "seam": "store", "fault": "TransactionConflict",
                "target": {"function": "WebSocketFunction", "request_id": f"r{t}", "operation": "TransactWriteItems"},
                "params": {}, "rule": {"id": "conflicts"}} for t in range(0, half, 100)]
    faults.sort(key=lambda fault: fault["t"])
    with open(run_dir / "faults.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(fault, separators=(",", ":")) + "\n" for fault in faults)
    (run_dir / "run.json").write_text(json.dumps({"seed": 1, "rules": "reference"}))
    return written


def measure(run_dir: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak MB, the report's last line) of `relay-harness report` in a child process
    (its own resource usage, from ``wait4``)."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen([sys.executable, "-m", "harness", "report", str(run_dir)], stdout=output,
                                 stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        output.seek(0)
        line = output.read().strip().splitlines()[-1:]
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, line[0] if line else f"exit {child.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="history sizes, comma-separated")
    parser.add_argument("--replicate", metavar="RUN_DIR", type=Path,
                        help="check copies of this real run folder instead of synthetic histories")
    parser.add_argument("--concurrent", type=int, default=10,
                        help="with --replicate: copies overlapping in time at any moment (default 10)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.replicate is not None and not (args.replicate / "history.jsonl").is_file():
        parser.error(f"--replicate {args.replicate}: no history.jsonl there; give a run folder")
    previous = None
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            run_dir = Path(scratch) / f"run{size}"
            run_dir.mkdir()
            if args.replicate is not None:
                print(f"replicating {args.replicate} to {size:,} records ...", flush=True)
                written = replicate(args.replicate, run_dir, size, args.concurrent)
            else:
                print(f"writing {size:,} records ...", flush=True)
                written = write_run(run_dir, size)
            wall, cpu, peak, line = measure(run_dir)
            growth = "" if previous is None else (f"; x{wall / previous[1]:.1f} time for x{written / previous[0]:.1f} "
                                                  "records")
            print(f"{written:>9,} records: {wall:6.1f} s wall, {cpu:6.1f} s CPU, peak {peak:,.0f} MB{growth}\n"
                  f"           {line}", flush=True)
            previous = (written, wall)
            shutil.rmtree(run_dir)  # the next size's copies need the disk more


if __name__ == "__main__":
    main()
