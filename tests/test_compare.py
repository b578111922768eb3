"""``relay-harness compare``: a regression (worse verdict, new finding, slower p95, fewer deliveries/s)
exits 1 and is named; an equal or better run exits 0; a folder that is not a run folder is one line,
exit 2. Synthetic run folders, plus one real pair: the reference relay and a planted bug."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.compare import normalise
from harness.report.results import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
SLOT = ("membership", "a MESSAGE names a slot of its session")


def _stat(name: str, p50: float, p95: float, rps: float, requests: int = 100) -> dict:
    return {"type": "WS", "name": name, "requests": requests, "failures": 0, "median_ms": p50, "p95_ms": p95,
            "rps": rps}


def _run(folder: Path, verdict: str = "pass", violations: tuple[tuple[str, str, str], ...] = (),
         fanout: tuple[float, float, float] = (30, 100, 50.0), join: tuple[float, float] = (400, 800),
         samples: int = 100) -> Path:
    """A run folder holding only results.json: ``violations`` as (checker, invariant, message)."""
    checks = {}
    for name, invariant, message in violations:
        checks.setdefault(name, {"name": name, "title": name.title(), "status": "fail", "violations": []})
        checks[name]["violations"].append({"invariant": invariant, "message": message})
    stats = {"entries": [_stat("message fan-out", *fanout, requests=samples),
                         _stat("time to SESSION_CONNECT", *join, rps=1.0, requests=samples)], "errors": []}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "schema": SCHEMA, "verdict": verdict, "score": 100.0 if verdict == "pass" else 50.0, "seed": 1,
        "profile": "ci", "checks": list(checks.values()), "stats": stats}))
    return folder


def _compare(capsys, base: Path, run: Path, *options: str) -> tuple[int, str, str]:
    status = main(["compare", str(base), str(run), *options])
    out, err = capsys.readouterr()
    return status, out, err


def test_ids_and_counts_are_normalised_away_but_the_kind_of_finding_is_kept():
    first = normalise("session Tm5CGT3mZhOwlFzA: 12 MESSAGE(s) with memberNum -1, outside 0..1")
    assert first == normalise("session abcdefgh_JKLmn-1: 3 MESSAGE(s) with memberNum -1, outside 0..3")
    assert first == "session <id>: <n> MESSAGE(s) with memberNum -<n>, outside <n>..<n>"
    assert normalise("2 x API Gateway error frame 'Internal server error' (clients: PublicPlayer-1, w1-Ender-12)") \
        == normalise("5 x API Gateway error frame 'Internal server error' (clients: Reconnector-3)")
    assert normalise("WebSocketFunction: 1 error(s): RuntimeError: boom") == "WebSocketFunction: <n> error(s): " \
                                                                            "RuntimeError: boom"
    assert normalise("PublicPlayer-2-5 from PublicPlayer-2 never reached PublicPlayer-7") != \
        normalise("PublicPlayer-2 received PublicPlayer-7-3 2 times")


def test_an_equal_run_exits_0(tmp_path, capsys):
    found = (SLOT[0], SLOT[1], "session AAAA1111bbbb2222: 2 MESSAGE(s) with memberNum -1, outside 0..1")
    base = _run(tmp_path / "base", "fail", (found,))
    status, out, err = _compare(capsys, base, base)
    assert (status, err) == (0, "")
    assert out.startswith("## Run comparison: no regression") and "| fan-out p95 (ms) | 100 | 100 | 1.00 |" in out
    assert "### New findings: 0" in out and "### Fixed findings: 0" in out


def test_an_improved_run_exits_0_and_lists_what_it_fixed(tmp_path, capsys):
    found = (SLOT[0], SLOT[1], "session AAAA1111bbbb2222: 2 MESSAGE(s) with memberNum -1, outside 0..1")
    base = _run(tmp_path / "base", "fail", (found,), fanout=(30, 400, 20.0), join=(900, 3000))
    run = _run(tmp_path / "run", "pass", fanout=(20, 90, 60.0), join=(300, 500))
    status, out, _ = _compare(capsys, base, run)
    assert status == 0, out
    assert "### Fixed findings: 1" in out and "memberNum -1" in out.split("### Fixed findings")[1]
    assert "| deliveries/s | 20 | 60 | 3.00 |" in out


def test_the_same_finding_with_other_ids_is_not_new(tmp_path, capsys):
    base = _run(tmp_path / "base", "fail", ((*SLOT, "session AAAA1111bbbb2222: 2 MESSAGE(s) with memberNum -1, "
                                                     "outside 0..1"),))
    run = _run(tmp_path / "run", "fail", ((*SLOT, "session zzzz9999YYYY8888: 7 MESSAGE(s) with memberNum -1, "
                                                    "outside 0..1"),) * 2)
    status, out, _ = _compare(capsys, base, run)
    assert status == 0 and "### New findings: 0" in out, out


@pytest.mark.parametrize(("base_kwargs", "run_kwargs", "named"), [
    ({}, {"verdict": "fail", "violations": (("delivery", "no duplicate delivery", "Ender-1 received Ender-2-1 2 "
                                                                                   "times"),)},
     ["verdict pass -> fail", "1 new finding(s) of 1 kind(s)", "**Delivery**, no duplicate delivery: Ender-1"]),
    ({}, {"verdict": "inconclusive"}, ["verdict pass -> inconclusive"]),
    ({"verdict": "fail", "violations": ((*SLOT, "session a: 1 MESSAGE(s) with memberNum -1, outside 0..1"),)},
     {"verdict": "fail", "violations": (("health", "no handler errors", "StreamFunction: 1 error(s): KeyError"),)},
     ["1 new finding(s) of 1 kind(s)", "**Health**, no handler errors"]),
    ({}, {"fanout": (30, 160, 50.0)}, ["fan-out p95 (ms) 100 -> 160 (x1.60)"]),
    ({}, {"join": (400, 1100)}, ["join (to SESSION_CONNECT) p95 (ms) 800 -> 1100 (x1.38)"]),
    ({}, {"fanout": (30, 100, 30.0)}, ["deliveries/s 50 -> 30 (x0.60)"]),
])
def test_a_regression_exits_1_and_is_named(tmp_path, capsys, base_kwargs, run_kwargs, named):
    status, out, _ = _compare(capsys, _run(tmp_path / "base", **base_kwargs), _run(tmp_path / "run", **run_kwargs))
    assert status == 1 and out.startswith("## Run comparison: REGRESSION"), out
    regressions = out.split("Regressions:")[1]
    for name in named:
        assert name in regressions or name in out, out


@pytest.mark.parametrize(("run_kwargs", "options"), [
    ({"fanout": (30, 140, 50.0)}, []),                                   # 40 % but only 40 ms slower
    ({"fanout": (30, 100, 45.0)}, ["--max-regression", "5", "--min-rate", "6"]),  # 5 fewer/s: under 6/s
    ({"fanout": (30, 160, 30.0)}, ["--max-regression", "70"]),           # within a wider threshold
    ({"fanout": (30, 900, 5.0), "samples": 49}, []),                     # too few samples to judge a p95 or a rate
])
def test_small_or_allowed_differences_exit_0(tmp_path, capsys, run_kwargs, options):
    base = _run(tmp_path / "base", samples=run_kwargs.get("samples", 100))
    status, out, _ = _compare(capsys, base, _run(tmp_path / "run", **run_kwargs), *options)
    assert status == 0, out


def test_out_writes_the_same_markdown(tmp_path, capsys):
    base, run = _run(tmp_path / "base"), _run(tmp_path / "run", verdict="fail")
    status, out, _ = _compare(capsys, base, run, "--out", str(tmp_path / "compare.md"))
    assert status == 1 and (tmp_path / "compare.md").read_text() == out


@pytest.mark.parametrize(("make", "says"), [
    (lambda p: p, "BASE_RUN {p} is not a folder: pass a run folder"),
    (lambda p: (p.mkdir(), p)[1], "BASE_RUN {p} holds no results.json: pass a run folder written by"),
    (lambda p: (p.mkdir(), (p / "history.jsonl").write_text(""), p)[2],
     "holds no results.json: build its report first with `relay-harness report {p}`"),
    (lambda p: (p.mkdir(), (p / "results.json").write_text("{"), p)[2], "results.json could not be read"),
    (lambda p: (p.mkdir(), (p / "results.json").write_text("[]"), p)[2],
     f"results.json is not a {SCHEMA} file: rebuild it with `relay-harness report {{p}}`"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, says):
    base = make(tmp_path / "base")
    run = _run(tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "harness", "compare", str(base), str(run), "--out",
                           str(tmp_path / "compare.md")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "" and not (tmp_path / "compare.md").exists()
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("relay-harness compare: "), done.stderr
    assert says.format(p=tmp_path / "base") in done.stderr, done.stderr


@pytest.mark.parametrize(("options", "says"), [
    (["--max-regression", "-5"], "argument --max-regression: '-5' must be a number, 0 or more"),
    (["--min-rate", "lots"], "argument --min-rate: 'lots' is not a number"),
    (["--out", "/nonexistent/folder/c.md"], "--out /nonexistent/folder/c.md: give a file in an existing folder"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys, options, says):
    run = _run(tmp_path / "run")
    try:
        status = main(["compare", str(run), str(run), *options])
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and says in err and len(err.splitlines()) == 1, err
