"""``relay-harness fis-template``: an AWS FIS experiment template from a chaos profile's invocation rules.

The output is the request of FIS ``CreateExperimentTemplate`` (``description``, ``targets``,
``actions``, ``stopConditions``, ``roleArn``, ``tags``; the CLI adds ``clientToken`` when it sends
it: ``aws fis create-experiment-template --cli-input-json file://FILE``). Mapping, per rule:

- ``error_before`` -> ``aws:lambda:invocation-error`` with ``preventExecution = true``;
  ``error_after`` -> the same with ``preventExecution = false``;
- ``latency`` / ``cold_start`` -> ``aws:lambda:invocation-add-delay`` (``startupDelayMilliseconds``);
- ``probability`` -> ``invocationPercentage`` (a whole percentage from 1 to 100);
- the rule's span -> the action's ``duration`` (ISO 8601, ``PT30S``); a span that starts later
  starts after an ``aws:fis:wait`` action of that length (``startAfter``); an open end lasts
  until ``--run-seconds``;
- ``match.function`` -> the action's ``Functions`` target (resource type ``aws:lambda:function``,
  ARNs from ``--function-arn`` or clearly named placeholders); ``match.source`` only when every
  invocation of the targeted functions has that source (from the SAM template).

Everything else (the store, management, process and wire seams, ``timeout``, ``throttle``,
matches on route or action) cannot be expressed in FIS and is listed on stderr, one line per rule;
what is only approximated (``count``, ``jitter_ms``, a rounded percentage) likewise. The request is
checked offline against botocore's FIS service model; no AWS call, no region needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

from ..cli import UsageError
from .plan import Rule
from .profile import ProfileError, load_profile

_ACTIONS = {"error_before": "aws:lambda:invocation-error", "error_after": "aws:lambda:invocation-error",
            "latency": "aws:lambda:invocation-add-delay", "cold_start": "aws:lambda:invocation-add-delay"}
_NO_FIS = {"store": "FIS cannot fail a handler's single DynamoDB calls",
           "management": "FIS cannot fail a handler's single @connections calls",
           "process": "FIS has no such whole-stack fault for Lambda",
           "wire": "a wire fault is the chaos proxy's, not the functions'"}
_ROLE_PLACEHOLDER = "arn:aws:iam::ACCOUNT_ID:role/REPLACE-WITH-FIS-EXPERIMENT-ROLE"


def _placeholder_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:REGION:ACCOUNT_ID:function:REPLACE-WITH-{logical_id}"


@dataclass
class Template:
    """The request being built and what could not be expressed (one line each)."""

    request: dict[str, Any]
    unexpressed: list[str] = field(default_factory=list)
    approximated: list[str] = field(default_factory=list)


def _duration(seconds: float) -> str:
    return f"PT{max(1, math.ceil(seconds))}S"


def _name(text: str) -> str:
    """An action or target name as FIS takes it (no whitespace, at most 64 characters)."""
    return re.sub(r"\s+", "-", text)[:64]


def function_sources(template_path: Path) -> dict[str, set[str]]:
    """Logical id -> the event sources that invoke it (``websocket``, ``http``, ``stream``, ``schedule``),
    from a SAM template (rules name functions by logical id here)."""
    from ..stack.deployment import deployment_context, load_deployment
    from ..stack.template import Template as SamTemplate
    from ..stack.template import TemplateError

    try:
        sam = SamTemplate.load(template_path)
        deployment = load_deployment(sam, deployment_context(sam, stack_name="fis"))
    except (OSError, TemplateError) as exc:
        raise UsageError(f"cannot read the SAM template {template_path}: {exc}") from None
    sources: dict[str, set[str]] = {logical: set() for logical in deployment.functions}
    for function in deployment.websocket_routes.values():
        sources[function].add("websocket")
    for *_, function in deployment.http_routes:
        sources[function].add("http")
    for stream in deployment.streams:
        sources[stream.function].add("stream")
    for schedule in deployment.schedules:
        sources[schedule.function].add("schedule")
    return sources


def _targets(rule: Rule, sources: dict[str, set[str]]) -> tuple[list[str], str | None]:
    """The logical ids a rule reaches in FIS, or a reason it cannot be expressed."""
    match = dict(rule.match)
    unmatched = [key for key in ("route", "action") if key in match]
    if unmatched:
        return [], f"matches on {unmatched[0]}, and FIS targets whole functions"
    functions = list(match.get("function", sources))
    unknown = [f for f in functions if f not in sources]
    if unknown:
        return [], f"function {unknown[0]!r} is not in the template (functions: {', '.join(sources)})"
    if "source" in match:
        wanted = set(match["source"])
        mixed = [f for f in functions if sources[f] & wanted and sources[f] - wanted]
        if mixed:
            return [], (f"matches source {'/'.join(sorted(wanted))}, but {mixed[0]} is also invoked by "
                        f"{'/'.join(sorted(sources[mixed[0]] - wanted))} and FIS cannot tell them apart")
        functions = [f for f in functions if sources[f] & wanted]
        if not functions:
            return [], f"no function of the template is invoked by {'/'.join(sorted(wanted))}"
    return sorted(functions), None


def build(rules_and_raw: list[tuple[Rule | None, dict[str, Any]]], profile_name: str, description: str,
          sources: dict[str, set[str]], function_arns: dict[str, str], role_arn: str | None,
          run_seconds: float) -> Template:
    """The CreateExperimentTemplate request for a profile's rules (``None`` for a wire fault)."""
    out = Template({"description": (description or f"relay-harness chaos profile {profile_name}")[:512],
                    "targets": {}, "actions": {}, "stopConditions": [{"source": "none"}],
                    "roleArn": role_arn or _ROLE_PLACEHOLDER,
                    "tags": {"relay-harness-profile": profile_name[:256]}})
    for rule, raw in rules_and_raw:
        name = raw.get("name", "fault")
        seam = raw.get("seam", "wire")
        if rule is None or rule.seam != "invocation":
            out.unexpressed.append(f"{name} ({seam} {raw.get('type')}): {_NO_FIS[seam]}")
            continue
        if rule.type not in _ACTIONS:
            out.unexpressed.append(f"{name} (invocation {rule.type}): FIS's Lambda actions are invocation-error, "
                                   "invocation-add-delay and invocation-http-integration-response")
            continue
        functions, reason = _targets(rule, sources)
        start, end = rule.start or 0.0, rule.end if rule.end is not None else run_seconds
        if reason is None and end <= start:
            reason = f"its window starts after --run-seconds ({run_seconds:g})"
        if reason is None and rule.probability <= 0:
            reason = "its probability is 0"
        if reason is not None:
            out.unexpressed.append(f"{name} (invocation {rule.type}): {reason}")
            continue
        _add_action(out, rule, _name(name), functions, function_arns, start, end)
    return out


def _add_action(out: Template, rule: Rule, action: str, functions: list[str], function_arns: dict[str, str],
                start: float, end: float) -> None:
    percentage = min(100, max(1, round(rule.probability * 100)))
    if percentage != rule.probability * 100:
        out.approximated.append(f"{rule.name}: probability {rule.probability:g} -> invocationPercentage "
                                f"{percentage} (whole percentages only)")
    if rule.count is not None:
        out.approximated.append(f"{rule.name}: count = {rule.count} dropped (FIS has no limit on how many "
                                "invocations)")
    if rule.params.get("jitter_ms"):
        out.approximated.append(f"{rule.name}: jitter_ms = {rule.params['jitter_ms']:g} dropped (FIS adds a "
                                "fixed delay)")
    parameters = {"duration": _duration(end - start), "invocationPercentage": str(percentage)}
    if rule.type in ("error_before", "error_after"):
        parameters["preventExecution"] = "true" if rule.type == "error_before" else "false"
    else:
        parameters["startupDelayMilliseconds"] = str(round(rule.params["ms"]))
    target = functions[0] if len(functions) == 1 else _name(f"{action}-functions")
    out.request["targets"][target] = {
        "resourceType": "aws:lambda:function", "selectionMode": "ALL",
        "resourceArns": [function_arns.get(f, _placeholder_arn(f)) for f in functions]}
    entry: dict[str, Any] = {"actionId": _ACTIONS[rule.type], "description": f"{rule.name}: {rule.type}"[:512],
                             "parameters": parameters, "targets": {"Functions": target}}
    if start > 0:
        wait = _name(f"wait-{start:g}s")
        out.request["actions"][wait] = {"actionId": "aws:fis:wait", "description": f"{start:g} s into the run",
                                        "parameters": {"duration": _duration(start)}}
        entry["startAfter"] = [wait]
    out.request["actions"][action] = entry


def _constraints(value: Any, shape: Any, path: str) -> str | None:
    """What botocore's validator leaves out: maximum lengths and patterns. The first breach, or None."""
    limit, pattern = shape.metadata.get("max"), shape.metadata.get("pattern")
    if shape.type_name == "string":
        if limit is not None and len(value) > limit:
            return f"{path} is {len(value)} characters long (at most {limit})"
        if pattern and not re.fullmatch(pattern, value):
            return f"{path} {value!r} does not match {pattern}"
        return None
    if limit is not None and len(value) > limit:
        return f"{path} has {len(value)} entries (at most {limit})"
    if shape.type_name == "structure":
        members = ((f"{path}.{k}", v, shape.members[k]) for k, v in value.items())
    elif shape.type_name == "map":
        members = (item for k, v in value.items()
                   for item in ((f"{path} key {k!r}", k, shape.key), (f"{path}.{k}", v, shape.value)))
    elif shape.type_name == "list":
        members = ((f"{path}[{i}]", v, shape.member) for i, v in enumerate(value))
    else:
        return None
    return next((found for p, v, s in members if (found := _constraints(v, s, p))), None)


def validate(request: dict[str, Any]) -> None:
    """Check the request against botocore's FIS model (as sent, with the client token the CLI adds).
    Raises UsageError with the first problem on one line."""
    shape = botocore.session.get_session().get_service_model("fis").operation_model(
        "CreateExperimentTemplate").input_shape
    params = {"clientToken": "relay-harness", **request}
    report = ParamValidator().validate(params, shape)
    problem = " ".join(report.generate_report().split()) if report.has_errors() else _constraints(
        params, shape, "request")
    if problem:
        raise UsageError(f"the experiment template is not valid for FIS CreateExperimentTemplate: {problem}")


def _function_arns(pairs: list[str], sources: dict[str, set[str]]) -> dict[str, str]:
    arns = {}
    for pair in pairs:
        logical, sep, arn = pair.partition("=")
        if not sep or not arn.startswith("arn:"):
            raise UsageError(f"--function-arn {pair!r} must be LOGICAL_ID=ARN, e.g. "
                             f"StreamFunction=arn:aws:lambda:us-east-1:123456789012:function:relay-StreamFunction")
        if logical not in sources:
            raise UsageError(f"--function-arn names {logical!r}, which the template does not define "
                             f"(functions: {', '.join(sources)})")
        arns[logical] = arn
    return arns


def run_fis_template(args: argparse.Namespace) -> int:
    from ..stack.local_stack import DEFAULT_TEMPLATE
    from .plan import parse_rule

    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    if args.run_seconds <= 0:
        raise UsageError(f"--run-seconds must be more than 0, not {args.run_seconds:g}")
    sources = function_sources(args.template or DEFAULT_TEMPLATE)
    arns = _function_arns(args.function_arn, sources)
    rules = [(None if f.get("seam", "wire") == "wire" else parse_rule(f), f) for f in profile.faults]
    template = build(rules, profile.name, profile.description, sources, arns, args.role_arn, args.run_seconds)
    for line in template.unexpressed:
        print(f"not expressible in FIS: {line}", file=sys.stderr)
    for line in template.approximated:
        print(f"approximated in FIS: {line}", file=sys.stderr)
    if not any(a["actionId"] != "aws:fis:wait" for a in template.request["actions"].values()):
        raise UsageError(f"no rule of profile {profile.name!r} is expressible in FIS (FIS takes invocation "
                         "error_before, error_after, latency and cold_start rules)")
    validate(template.request)
    functions = sorted({arn.rpartition("REPLACE-WITH-")[2] for t in template.request["targets"].values()
                        for arn in t["resourceArns"] if "REPLACE-WITH-" in arn})
    for function in functions:
        print(f"placeholder ARN for {function}: pass --function-arn {function}=ARN", file=sys.stderr)
    if not args.role_arn:
        print("placeholder roleArn: pass --role-arn ARN (a role FIS may use)", file=sys.stderr)
    text = json.dumps(template.request, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp") as out:
        out.write(text)
    os.replace(out.name, args.out)
    return 0


def add_parser(sub: Any) -> None:
    fis = sub.add_parser("fis-template", help="an AWS FIS experiment template (CreateExperimentTemplate JSON) from a "
                                              "chaos profile's invocation rules")
    fis.add_argument("profile", help="a built-in profile name or a TOML file")
    fis.add_argument("--function-arn", action="append", default=[], metavar="LOGICAL_ID=ARN",
                     help="the deployed ARN of a template function (repeatable); otherwise a named placeholder")
    fis.add_argument("--role-arn", help="the IAM role FIS runs the experiment with; otherwise a named placeholder")
    fis.add_argument("--template", type=Path, help="the relay's SAM template (default: the reference relay's)")
    fis.add_argument("--run-seconds", type=float, default=300.0,
                     help="how long a rule without an end lasts (seconds, default 300)")
    fis.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    fis.set_defaults(run=run_fis_template)
