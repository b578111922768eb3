"""``relay-harness lambda-faults``: the chaos wrapper's fault lines, read back into a faults.jsonl.

The wrapper (``harness/lambda_chaos.py``) prints one JSON line per injected fault; this command
finds them in CloudWatch Logs (``logs.filter_log_events``, by log group or by a prefix such as
``/aws/lambda/STACK-``) or in a saved log: the output of ``sam logs``, ``aws logs tail`` or
``aws logs filter-log-events`` (its JSON), or the local stack's ``stack.log``. The lines are
merged into ``--out`` (lines already there are kept, none is written twice, all in time order),
so the proxy's wire faults and the wrapper's share the run folder's faults.jsonl that
``relay-harness report`` checks and draws on its timeline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .cli import UsageError
from .lambda_chaos import MARKER

_DECODER = json.JSONDecoder()
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def faults_in_message(message: str) -> list[dict[str, Any]]:
    """The fault-log entries (format 2, without the marker field) in one log message or text line."""
    found = []
    start = message.find(MARKER)
    while start >= 0:
        try:
            entry, end = _DECODER.raw_decode(message, start)
        except ValueError:  # a line cut short: skip its marker
            end = start + len(MARKER)
        else:
            entry.pop("relay_chaos", None)
            found.append(entry)
        start = message.find(MARKER, end)
    return found


def faults_in_text(text: str) -> list[dict[str, Any]]:
    """Every fault line in a saved log: the JSON that ``aws logs filter-log-events`` prints (its
    events' messages), or text with one message per line (``sam logs``, ``stack.log``, ...)."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("events"), list):
        messages = [str(event.get("message", "")) for event in document["events"] if isinstance(event, dict)]
    else:
        messages = text.splitlines()
    return [fault for message in messages for fault in faults_in_message(message)]


def faults_in_cloudwatch(client: Any, groups: list[str], prefixes: list[str], start_ms: int,
                         end_ms: int | None) -> list[dict[str, Any]]:
    """The fault lines of these log groups (and of every group under these prefixes) from
    ``start_ms`` to ``end_ms`` (epoch ms; None: now). Raises UsageError for a missing group."""
    names = list(groups)
    for prefix in prefixes:
        pages = client.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=prefix)
        found = [group["logGroupName"] for page in pages for group in page.get("logGroups", [])]
        if not found:
            raise UsageError(f"no log group starts with {prefix!r} (Lambda's are /aws/lambda/FUNCTION-NAME)")
        names.extend(found)
    window: dict[str, Any] = {"startTime": start_ms, **({"endTime": end_ms} if end_ms is not None else {})}
    faults = []
    for name in names:
        pages = client.get_paginator("filter_log_events").paginate(
            logGroupName=name, filterPattern='"relay_chaos"', **window)
        try:
            for page in pages:
                for event in page.get("events", []):
                    faults.extend(faults_in_message(event.get("message", "")))
        except client.exceptions.ResourceNotFoundException:
            raise UsageError(f"log group {name!r} not found (Lambda's are /aws/lambda/FUNCTION-NAME)") from None
    return faults


def merge_into(path: Path, faults: list[dict[str, Any]]) -> int:
    """Add ``faults`` to the JSON lines file ``path`` (created if missing) unless already there;
    every line in time order; written whole or not at all. Returns how many were new."""
    lines = path.read_text().splitlines() if path.exists() else []
    entries = [json.loads(line) for line in lines if line.strip()]
    seen = {json.dumps(e, sort_keys=True) for e in entries}
    new = []
    for fault in faults:
        key = json.dumps(fault, sort_keys=True)
        if key not in seen:
            seen.add(key)
            new.append(fault)
    merged = sorted(entries + new, key=lambda e: e.get("t", 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as out:
        out.writelines(json.dumps(e) + "\n" for e in merged)
    os.replace(out.name, path)
    return len(new)


def _epoch_ms(text: str) -> int:
    """``30m`` / ``2h`` / ``90s`` / ``1d`` ago, unix seconds, or an ISO 8601 time (with its offset)."""
    ago = _AGO.match(text)
    if ago:
        return int((time.time() - float(ago.group(1)) * _UNIT_S[ago.group(2)]) * 1000)
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: give 30m, 2h, 1d (ago), unix seconds or an "
                                         "ISO 8601 time such as 2025-01-31T12:00:00Z") from None


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("lambda-faults", help="read the chaos wrapper's fault lines from CloudWatch Logs or a "
                                                  "saved log into a faults.jsonl")
    parser.add_argument("--log-group", action="append", default=[], metavar="NAME",
                        help="CloudWatch log group to read (repeatable), e.g. /aws/lambda/relay-StreamFunction-Ab12")
    parser.add_argument("--log-group-prefix", action="append", default=[], metavar="PREFIX",
                        help="read every log group whose name starts so (repeatable), e.g. /aws/lambda/relay-")
    parser.add_argument("--from-file", action="append", default=[], type=Path, metavar="FILE",
                        help="read a saved log instead (repeatable): sam logs, aws logs tail or filter-log-events "
                             "output, or the local stack's stack.log")
    parser.add_argument("--start", type=_epoch_ms, metavar="WHEN", help="from (default 1h ago): 30m, 2h, 1d (ago), "
                                                                        "unix seconds or ISO 8601")
    parser.add_argument("--end", type=_epoch_ms, metavar="WHEN", help="until (default: now)")
    parser.add_argument("--region", help="AWS region of the log groups (default: boto3's)")
    parser.add_argument("--out", type=Path, required=True, help="faults.jsonl to add the lines to (e.g. the run "
                                                                "folder's, then `relay-harness report` it)")
    parser.set_defaults(run=run_lambda_faults)


def run_lambda_faults(args: argparse.Namespace) -> int:
    from_cloudwatch = bool(args.log_group or args.log_group_prefix)
    if from_cloudwatch == bool(args.from_file):
        raise UsageError("give --log-group / --log-group-prefix (CloudWatch Logs) or --from-file (a saved log)")
    if from_cloudwatch:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        start = args.start if args.start is not None else int((time.time() - 3600) * 1000)
        try:
            client = boto3.client("logs", region_name=args.region)
            faults = faults_in_cloudwatch(client, args.log_group, args.log_group_prefix, start, args.end)
        except (BotoCoreError, ClientError) as exc:
            raise UsageError(f"cannot read CloudWatch Logs: {' '.join(str(exc).split())}") from None
    else:
        missing = [str(p) for p in args.from_file if not p.is_file()]
        if missing:
            raise UsageError(f"{missing[0]} not found: pass a saved log file")
        faults = [f for path in args.from_file for f in faults_in_text(path.read_text(errors="replace"))]
    try:
        new = merge_into(args.out, faults)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot merge into {args.out}: {exc} (it must be a JSON lines fault log)") from None
    print(f"{len(faults)} fault line(s) read, {new} new in {args.out}")
    return 0
