"""How checking and reporting grow with the history: ``python benchmarks/report_benchmark.py``.

Writes synthetic run folders of about 10^4, 10^5 and 10^6 history records (sessions of two players
who join, chat, heartbeat and leave, with every delivery matched to its send: what a fault-free run
looks like) and runs ``relay-harness report`` on each in its own process, printing the wall time,
the CPU time and the peak memory, and the growth between sizes (linear growth: x10 per x10).
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


def write_history(path: Path, records: int) -> int:
    """Sessions of two until about ``records`` records; returns how many were written."""
    written = 0
    mono = 0.0
    with open(path, "w", encoding="utf-8") as out:
        def put(**record: object) -> None:
            nonlocal written, mono
            mono += 0.001
            out.write(json.dumps({"mono": round(mono, 6), "conn": 1, **record}, separators=(",", ":")) + "\n")
            written += 1

        session = 0
        while written < records:
            t0 = 1_000_000 + session * 50  # sessions overlap in time, as in a busy run
            sid, players = f"S{session}", (f"a{session}", f"b{session}")
            for num, client in enumerate(players):
                member = f"m{client}"
                put(t=t0, client=client, op="connect", phase="invoke",
                    msg={"sessionType": "bench", "targetNumMembers": "2"})
                put(t=t0 + 5, client=client, op="connect", phase="ok")
                put(t=t0 + 20, client=client, op="recv", phase="ok", member=member, session=sid,
                    msg={"type": "SESSION_CONNECT", "sessionType": "bench", "sessionId": sid, "memberNum": num,
                         "memberPresence": [True, True]})
            for i in range(10):
                for num, sender in enumerate(players):
                    pid, t = f"{sender}-{i}", t0 + 100 + 200 * i
                    payload = json.dumps({"pid": pid, "ts": t, "body": "gg"})
                    put(t=t, client=sender, op="send", phase="invoke", member=f"m{sender}", session=sid, pid=pid,
                        msg={"action": "SEND_MESSAGE", "payload": payload})
                    put(t=t + 1, client=sender, op="send", phase="ok", member=f"m{sender}", session=sid, pid=pid)
                    for receiver in players:
                        put(t=t + 30, client=receiver, op="recv", phase="ok", member=f"m{receiver}", session=sid,
                            pid=pid, msg={"type": "MESSAGE", "payload": payload, "time": t + 10, "memberNum": num})
            for client in players:
                for beat in range(4):
                    put(t=t0 + 1000 + 2000 * beat, client=client, op="heartbeat", phase="invoke",
                        member=f"m{client}", session=sid, msg={"action": "HEARTBEAT", "inclMessagesAfter": 0})
                    put(t=t0 + 1010 + 2000 * beat, client=client, op="heartbeat", phase="ok", member=f"m{client}",
                        session=sid)
            session += 1
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
                written = write_history(run_dir / "history.jsonl", size)
                (run_dir / "run.json").write_text(json.dumps({"seed": 1, "rules": "reference"}))
            wall, cpu, peak, line = measure(run_dir)
            growth = "" if previous is None else (f"; x{wall / previous[1]:.1f} time for x{written / previous[0]:.1f} "
                                                  "records")
            print(f"{written:>9,} records: {wall:6.1f} s wall, {cpu:6.1f} s CPU, peak {peak:,.0f} MB{growth}\n"
                  f"           {line}", flush=True)
            previous = (written, wall)
            shutil.rmtree(run_dir)  # the next size's copies need the disk more


if __name__ == "__main__":
    main()
