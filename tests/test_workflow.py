"""The users' workflow template (.github/workflows/chaos.yml) cannot run here, so it is checked instead:
against GitHub's workflow schema (check-jsonschema's vendored copy, offline), and every `relay-harness`
command in its run: steps against the real parser, so the template cannot rot as the commands change."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "chaos.yml"
SHELL_OPERATORS = {"||", "&&", ";", "|"}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _validate(path: Path, schema: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_the_template_is_a_valid_github_workflow(schema):
    done = _validate(WORKFLOW, schema)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_rejects_a_broken_workflow(tmp_path):
    """The schema check has teeth: a misspelt job key fails it."""
    broken = tmp_path / "chaos.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    done = _validate(broken, "vendor.github-workflows")
    assert done.returncode == 1 and "runs_on" in done.stdout, done.stdout + done.stderr


def _expand(text: str, env: dict[str, str]) -> str:
    """GitHub expressions, then shell variables, as the runner would: ``env.X`` and ``$X`` from the
    workflow's env; other contexts (github.run_number, ...) as a stand-in number."""
    def expression(match: re.Match[str]) -> str:
        name = match.group(1)
        return env[name.removeprefix("env.")] if name.startswith("env.") else "1"

    def variable(match: re.Match[str]) -> str:
        assert match.group(1) in env, f"{match.group(1)} is used in a relay-harness command but set nowhere"
        return env[match.group(1)]

    return VARIABLE.sub(variable, EXPRESSION.sub(expression, text))


def _commands() -> list[tuple[str, list[str]]]:
    """(job, the words of each `relay-harness` command, to the first shell operator) in run: steps."""
    workflow = _workflow()
    found = []
    for job_name, job in workflow["jobs"].items():
        for step in job["steps"]:
            env = {**workflow.get("env", {}), **job.get("env", {}), **step.get("env", {})}
            env = {key: _expand(str(value), {}) for key, value in env.items()}
            for line in step.get("run", "").replace("\\\n", " ").splitlines():
                if line.strip().startswith("relay-harness "):
                    words = shlex.split(_expand(line, env))
                    end = next((i for i, word in enumerate(words) if word in SHELL_OPERATORS), len(words))
                    found.append((job_name, words[1:end]))
    return found


def test_every_relay_harness_command_parses_with_the_real_parser():
    commands = _commands()
    assert {words[0] for _, words in commands} == {"chaos", "compare"}
    parser = build_parser()
    for job, words in commands:
        args, extra = parser.parse_known_args(words)  # exits 2 (one line) on an unknown option or a bad value
        assert not extra, f"job {job}: `relay-harness {shlex.join(words)}`: unknown {extra}"
        assert callable(args.run)
    profiles = {job: words[words.index("--profile") + 1] for job, words in commands if words[0] == "chaos"}
    assert profiles == {"chaos": "ci", "compare": "ci", "soak": "soak"}


def test_reports_are_kept_and_published_even_when_the_run_fails():
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request", "schedule"} <= set(triggers)
    for name in ("chaos", "soak"):
        steps = workflow["jobs"][name]["steps"]
        run_step = next(i for i, step in enumerate(steps) if "relay-harness chaos" in step.get("run", ""))
        after = steps[run_step + 1:]
        assert "continue-on-error" not in steps[run_step] and "||" not in steps[run_step]["run"], \
            f"{name}: the run's exit status must gate the job"
        uses = {step.get("uses", "").split("@")[0]: step for step in after}
        assert {"actions/upload-artifact", "mikepenz/action-junit-report"} <= set(uses)
        summary = next(step for step in after if "GITHUB_STEP_SUMMARY" in step.get("run", ""))
        assert "summary.md" in summary["run"]
        assert all(step.get("if") == "always()" for step in after), f"{name}: a failed run must still report"
