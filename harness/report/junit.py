"""``junit.xml``: one test case per checker, for CI systems that read JUnit.

Statuses: ``fail`` -> <failure> (the violations), ``error`` -> <error> (the checker's exception),
``skipped`` -> <skipped> (why), ``not exercised`` -> <skipped message="checked nothing">.

An inconclusive verdict adds a test case ``verdict`` with an <error> carrying the reason. Not a
<skipped>: Jenkins, GitLab and the GitHub JUnit report actions show a suite of passes and skips as
green, and an inconclusive run proved nothing; an <error> (rather than a <failure>) says the run
could not judge the relay, not that the relay broke a rule. The test case exists only then, so a
pass or fail run has exactly one test case per checker.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from .markdown import cpu_warning, verdict_line


def _properties(results: dict[str, Any]) -> dict[str, str]:
    """Only the properties the run has: an absent profile or score is left out, not written "None"."""
    values = {"verdict": results.get("verdict"), "verdict_reason": results.get("verdict_reason"),
              "seed": results.get("seed"), "profile": results.get("profile"), "rules": results.get("rules"),
              "score": None if results.get("score") is None else f"{results['score']:.1f}",
              "short_of_cpu": cpu_warning(results), "replay": results.get("replay")}
    return {key: str(value) for key, value in values.items() if value not in (None, "")}


def _case(suite: ET.Element, check: dict[str, Any]) -> None:
    case = ET.SubElement(suite, "testcase", classname="relay-harness.checkers", name=check["title"])
    status = check["status"]
    if status == "skipped":
        ET.SubElement(case, "skipped", message=check.get("skipped") or "")
    elif status == "not exercised":
        ET.SubElement(case, "skipped", message="checked nothing")
    elif status == "error":
        error = check.get("error") or "the checker failed"
        ET.SubElement(case, "error", message=error, type=error.split(":", 1)[0]).text = error
    elif status == "fail":
        messages = [v["message"] for v in check.get("violations") or []]
        first = f": {messages[0]}" if messages else ""
        failure = ET.SubElement(case, "failure", message=f"{len(messages)} violation(s){first}")
        failure.text = "\n".join(messages)


def render_junit(results: dict[str, Any]) -> str:
    checks = results.get("checks", [])
    verdict, reason = verdict_line(results)
    inconclusive = verdict == "INCONCLUSIVE"
    suite = ET.Element("testsuite", name="relay-harness", tests=str(len(checks) + inconclusive),
                       failures=str(sum(c["status"] == "fail" for c in checks)),
                       errors=str(sum(c["status"] == "error" for c in checks) + inconclusive),
                       skipped=str(sum(c["status"] in ("skipped", "not exercised") for c in checks)))
    properties = ET.SubElement(suite, "properties")
    for key, value in _properties(results).items():
        ET.SubElement(properties, "property", name=key, value=value)
    if inconclusive:
        case = ET.SubElement(suite, "testcase", classname="relay-harness", name="verdict")
        message = f"inconclusive: {reason or 'the run could not judge the relay'}"
        ET.SubElement(case, "error", message=message, type="inconclusive").text = message
    for check in checks:
        _case(suite, check)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
