"""The local stack's options through a Locust run and ``relay-harness chaos`` (--parameter,
--function, --concurrency), and short expiries for a template whatever it names them."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from harness.chaos import locust_command, replay_command
from harness.checkers import cleanup, live_cleanup
from harness.checkers.model import Run
from harness.cli import UsageError, build_parser
from harness.local_target import LocalTarget
from harness.stack.cli import check_functions, check_parameters
from harness.stack.local_stack import DEFAULT_TEMPLATE
from harness.stack.short_expiry import ExpiryError, expiry_parameters, shorten
from harness.stack.template import Template

FIXTURES = Path(__file__).parent / "fixtures"
FOREIGN = FIXTURES / "foreign_expiry_template.yaml"


def test_the_up_command_carries_the_stack_options_and_the_short_expiries(tmp_path):
    target = LocalTarget(tmp_path, seed=7, profile=None, short_expiry=True, template=str(FOREIGN),
                         parameters={"ConnectionExpireAfterSeconds": "30", "StageName": "x"},
                         functions={"HelloFunction": "http://127.0.0.1:3001"}, concurrency=4)
    assert target.up_args() == [
        "up", "--quiet", "--log-dir", str(tmp_path), "--template", str(FOREIGN),
        "--parameter", "ConnectionExpireAfterSeconds=30", "--parameter", "StageName=x",
        "--function", "HelloFunction=http://127.0.0.1:3001", "--concurrency", "4", "--schedule-interval", "5"]
    assert LocalTarget(tmp_path, seed=7, profile=None).up_args() == ["up", "--quiet", "--log-dir", str(tmp_path)]


def test_chaos_forwards_the_stack_options_and_its_replay_line_repeats_them():
    args = build_parser().parse_args(["chaos", "--profile", "smoke", "--template", str(FOREIGN), "--parameter",
                                      "StageName=x y", "--parameter", "LobbyTTL=60", "--function",
                                      "F=http://127.0.0.1:9", "--concurrency", "3"])
    stack = ["--template", str(FOREIGN), "--parameter", "StageName=x y", "--parameter", "LobbyTTL=60",
             "--function", "F=http://127.0.0.1:9", "--concurrency", "3"]
    command = locust_command(args, {"users": 2, "spawn_rate": 1.0, "duration": 5.0, "session_size": "2",
                                    "short_expiry": False, "cleanup_wait": 0.0}, 11)
    assert " ".join(stack) in " ".join(command)
    assert shlex.split(replay_command(args, 11)) == ["relay-harness", "chaos", "--profile", "smoke", "--seed", "11",
                                                     *stack]


def test_bad_stack_options_are_one_line_as_up_says_them():
    with pytest.raises(UsageError, match=r"^--parameter Nope: template .* declares no such parameter \(its "
                                         r"parameters: ConnectionExpireAfterSeconds, SessionExpireAfterSeconds, "
                                         r"LobbyTTL, RetryTtlSeconds, ExpiryNote, StageName\)$"):
        check_parameters(FOREIGN, ["Nope=1"])
    with pytest.raises(UsageError, match="must look like NAME=VALUE"):
        check_parameters(FOREIGN, ["LobbyTTL"])
    with pytest.raises(UsageError, match=r"give the Invoke API's URL, e\.g\. F=http://127\.0\.0\.1:3001"):
        check_functions(["F=127.0.0.1:3001"])


def test_short_expiries_follow_the_names_and_bounds_of_any_template():
    assert expiry_parameters(Template.load(DEFAULT_TEMPLATE)) == {  # what the reference relay always got
        "ConnectionExpirySeconds": "30", "MemberExpirySeconds": "30", "SessionExpirySeconds": "60"}
    assert expiry_parameters(Template.load(FOREIGN)) == {
        "ConnectionExpireAfterSeconds": "30", "SessionExpireAfterSeconds": "60",
        "LobbyTTL": "45",  # never below MinValue
        "RetryTtlSeconds": "20"}  # nor above MaxValue
    shortened, found = shorten(FOREIGN, {"SessionExpireAfterSeconds": "90"})  # the user's value wins
    assert "SessionExpireAfterSeconds" not in shortened and found["SessionExpireAfterSeconds"] == "60"


def test_a_template_with_no_expiry_parameter_is_refused_unless_the_user_sets_them():
    stack_template = FIXTURES / "stack_template.yaml"
    with pytest.raises(ExpiryError) as refused:
        shorten(stack_template, {})
    assert str(refused.value) == (
        f"the local stack cannot shorten the expiries of {stack_template}: it has no Number parameter named like an "
        "expiry or TTL (its parameters: FixtureLog, StageName); pass --parameter NAME=SECONDS for the relay's expiry "
        "settings, or leave out --cleanup-wait/--short-expiry")
    assert shorten(stack_template, {"FixtureLog": "x"}) == ({}, {})


def test_the_cleanup_checkers_use_the_expiries_in_force():
    options = {"parameters": {"SessionExpireAfterSeconds": "120"}, "expiries_s": {"SessionExpireAfterSeconds": 120.0}}
    store = {"cleanup_wait_s": 90, "rule_state": None, "tables": {"T": [{"id": "s1"}]}}
    early = cleanup.check(Run([], store=store, info={"stack_options": options}))
    assert early.skipped.startswith("the run waited 90 s for the clean-up, no longer than the relay's longest expiry "
                                    "in force (SessionExpireAfterSeconds=120 s)") and not early.violations
    unknown = {"parameters": {"Foo": "1"}, "expiries_s": None}
    judged = cleanup.check(Run([], store=store, info={"stack_options": unknown}))
    assert judged.violations and "not known" in judged.notes[0]
    short = {"parameters": {"ConnectionExpireAfterSeconds": "15"}, "expiries_s": {"ConnectionExpireAfterSeconds": 15.0}}
    assert live_cleanup.check(Run([], info={"stack_options": short})).notes == [
        "a live socket is one answered within the last 5 s: the shortest expiry in force is "
        "ConnectionExpireAfterSeconds=15 s"]
    assert "not known" in live_cleanup.check(Run([], info={"stack_options": unknown})).notes[0]
