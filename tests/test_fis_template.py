"""``relay-harness fis-template``: profiles become FIS CreateExperimentTemplate requests that botocore's
FIS model accepts; what FIS cannot express is listed, one line per rule; bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import UsageError, main
from harness.faults.fis import validate

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = str(ROOT / "tests/fixtures/fis.toml")
STREAM_ARN = "arn:aws:lambda:us-east-1:123456789012:function:relay-StreamFunction"
ROLE_ARN = "arn:aws:iam::123456789012:role/relay-fis"


def _run(capsys, *argv: str) -> tuple[int, dict, list[str]]:
    status = main(["fis-template", *argv])
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out else {}, captured.err.strip().splitlines()


def test_the_retries_profile_becomes_a_valid_template_and_its_other_rules_are_listed(capsys):
    status, request, err = _run(capsys, "retries", "--function-arn", f"StreamFunction={STREAM_ARN}",
                                "--role-arn", ROLE_ARN)
    assert status == 0
    validate(request)
    assert request["targets"] == {"StreamFunction": {"resourceType": "aws:lambda:function", "selectionMode": "ALL",
                                                     "resourceArns": [STREAM_ARN]}}
    assert request["actions"] == {  # from the start, for the whole --run-seconds (default 300)
        "stream-fails-after": {
            "actionId": "aws:lambda:invocation-error", "description": "stream-fails-after: error_after",
            "parameters": {"duration": "PT300S", "invocationPercentage": "40", "preventExecution": "false"},
            "targets": {"Functions": "StreamFunction"}}}
    assert request["roleArn"] == ROLE_ARN and request["stopConditions"] == [{"source": "none"}]
    assert request["tags"] == {"relay-harness-profile": "retries"}
    unexpressed = [line for line in err if line.startswith("not expressible in FIS: ")]
    assert [line.split(": ")[1].split(" (")[0] for line in unexpressed] == [
        "stream-cut", "heartbeat-fails-after", "conflicts", "throttled-reads", "throttled-writes", "store-hiccup",
        "answer-lost", "gateway-busy"]
    assert "matches on route" in unexpressed[1] and "(store TransactionConflict)" in unexpressed[2]
    assert not [line for line in err if "placeholder" in line]


def test_latency_error_before_and_cold_start_map_with_placeholders_and_approximations(capsys, tmp_path):
    out = tmp_path / "fis" / "template.json"
    status, _, err = _run(capsys, FIXTURE, "--function-arn", f"StreamFunction={STREAM_ARN}", "--out", str(out))
    assert status == 0
    request = json.loads(out.read_text())
    validate(request)
    actions = request["actions"]
    assert actions["slow-stream"]["actionId"] == "aws:lambda:invocation-add-delay"
    assert actions["slow-stream"]["parameters"] == {"duration": "PT20S", "invocationPercentage": "100",
                                                    "startupDelayMilliseconds": "250"}
    assert actions["slow-stream"]["startAfter"] == ["wait-10s"]
    assert actions["wait-10s"]["parameters"] == {"duration": "PT10S"}
    assert actions["http-refused"]["actionId"] == "aws:lambda:invocation-error"
    assert actions["http-refused"]["parameters"] == {"duration": "PT300S", "invocationPercentage": "33",
                                                     "preventExecution": "true"}
    assert "startAfter" not in actions["http-refused"]  # it starts with the experiment
    assert actions["cold"]["parameters"]["startupDelayMilliseconds"] == "800"
    assert actions["cold"]["parameters"]["duration"] == "PT60S"
    # match.source = "http" is the HttpFunction: the only function the template invokes over HTTP.
    assert request["targets"]["HttpFunction"]["resourceArns"] == [
        "arn:aws:lambda:REGION:ACCOUNT_ID:function:REPLACE-WITH-HttpFunction"]
    assert len(request["targets"][actions["cold"]["targets"]["Functions"]]["resourceArns"]) == 2
    assert request["targets"]["StreamFunction"]["resourceArns"] == [STREAM_ARN]
    assert [line for line in err if line.startswith("not expressible")] == [
        "not expressible in FIS: joins-fail (invocation error_after): matches on route, and FIS targets whole "
        "functions",
        "not expressible in FIS: skewed (process clock_skew): FIS has no such whole-stack fault for Lambda"]
    assert sum(line.startswith("approximated in FIS: ") for line in err) == 3  # jitter, 33 %, count
    assert "placeholder roleArn: pass --role-arn ARN (a role FIS may use)" in err
    assert "placeholder ARN for HttpFunction: pass --function-arn HttpFunction=ARN" in err


@pytest.mark.parametrize(("argv", "says"), [
    (["no-such-profile"], "chaos profile 'no-such-profile' not found"),
    (["retries", "--role-arn", "arn:aws:iam::1:r"], "not valid for FIS CreateExperimentTemplate"),
    (["retries", "--function-arn", "Nope=arn:aws:lambda:us-east-1:1:function:x"], "names 'Nope', which the "
                                                                                   "template does not define"),
    (["retries", "--function-arn", "StreamFunction"], "must be LOGICAL_ID=ARN"),
    (["outage"], "no rule of profile 'outage' is expressible in FIS"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(capsys, tmp_path, argv, says):
    out = tmp_path / "t.json"
    status, request, err = _run(capsys, *argv, "--out", str(out))
    refusals = [line for line in err if line.startswith("relay-harness fis-template: ")]
    assert status == 2 and request == {} and not out.exists()
    assert len(refusals) == 1 and says in refusals[0], err


def test_a_bad_profile_entry_is_refused_before_anything(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[fault]]\nname = "f"\nseam = "invocation"\ntype = "latency"\n')
    status, _, err = _run(capsys, str(bad))
    assert status == 2 and len(err) == 1 and "latency needs params.ms" in err[0]


def test_the_offline_check_catches_what_botocore_leaves_out():
    request = {"description": "x" * 513, "stopConditions": [{"source": "none"}], "roleArn": ROLE_ARN,
               "actions": {"wait": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT1S"}}}}
    with pytest.raises(UsageError, match=r"request.description is 513 characters long \(at most 512\)"):
        validate(request)
    with pytest.raises(UsageError, match="Missing required parameter"):
        validate({"description": "d", "roleArn": ROLE_ARN, "actions": {}})
    with pytest.raises(UsageError, match="does not match"):
        validate({**request, "description": "d", "actions": {"two words": request["actions"]["wait"]}})
