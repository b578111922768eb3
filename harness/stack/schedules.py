"""Schedules from the template (EventBridge rules) that invoke functions while the rule is ENABLED.

The rules live in the local EventBridge (moto), so a function that enables or disables its own
rule, as the reference relay's clean-up does, is honoured on the next tick. ``rate()``
expressions only; ``interval`` overrides every rate (for tests and demos that cannot wait a
minute).
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .events import schedule_event
from .logs import StackLog
from .runtime import Function
from .template import TemplateError

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float:
    found = _RATE.fullmatch(expression.strip())
    if not found:
        raise TemplateError(f"schedule {expression!r}: only rate(N minutes|hours|days) runs locally; "
                            "replace cron(...) with an equivalent rate(...) for local runs")
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")]


@dataclass(frozen=True)
class ScheduleSpec:
    rule_name: str
    expression: str
    function: Function
    enabled: bool = True


class Scheduler(threading.Thread):
    def __init__(self, specs: list[ScheduleSpec], events_client: Any, log: StackLog,
                 interval: float | None = None) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.specs = specs
        self.events = events_client
        self.log = log
        self.periods = {s.rule_name: interval or rate_seconds(s.expression) for s in specs}
        self.arns: dict[str, str] = {}
        self.stopping = threading.Event()
        self.checks = 0  # rule-state reads so far: lets a watcher wait for the scheduler to act
        self.executor = ThreadPoolExecutor(max_workers=max(1, len(specs)), thread_name_prefix="schedule")

    def create_rules(self) -> None:
        """Create each rule unless it already exists (a restarted stack keeps the rule's state)."""
        for spec in self.specs:
            try:
                self.arns[spec.rule_name] = self.events.describe_rule(Name=spec.rule_name)["Arn"]
            except self.events.exceptions.ResourceNotFoundException:
                state = "ENABLED" if spec.enabled else "DISABLED"
                self.arns[spec.rule_name] = self.events.put_rule(
                    Name=spec.rule_name, ScheduleExpression=spec.expression, State=state)["RuleArn"]

    def run(self) -> None:
        due = {s.rule_name: time.monotonic() + self.periods[s.rule_name] for s in self.specs}
        while self.specs and not self.stopping.is_set():
            wait = max(0.0, min(due.values()) - time.monotonic())
            if self.stopping.wait(wait):
                return
            now = time.monotonic()
            for spec in self.specs:
                if due[spec.rule_name] > now:
                    continue
                due[spec.rule_name] = now + self.periods[spec.rule_name]
                try:
                    state = self.events.describe_rule(Name=spec.rule_name)["State"]
                except Exception as exc:
                    self.log.line("schedule", f"{spec.rule_name}: cannot read the rule ({exc})")
                    continue
                if state == "ENABLED":
                    try:
                        self.executor.submit(spec.function.invoke, schedule_event(self.arns[spec.rule_name]))
                    except RuntimeError:  # stopped while this tick was being read
                        return
                self.checks += 1

    def stop(self) -> None:
        self.stopping.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
