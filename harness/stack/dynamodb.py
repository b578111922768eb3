"""A local DynamoDB: moto in server mode in its own process, tables created from the template.

A separate process keeps the data when the relay's own process restarts, and lets handlers in
other processes (or languages) reach it over HTTP like the real service.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import boto3

from .ports import ensure_free, free_port
from .template import TableSpec

LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class DynamoDBUnavailable(Exception):
    pass


class LocalDynamoDB:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: str | None = None,
                 ttl_delay: float | None = None, stack_log_dir: str | None = None) -> None:
        """``log_path``: the server's own output (tracebacks); ``stack_log_dir``: the stack's log
        folder, whose ``stack.log`` gets a line per request moto could not handle."""
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.ttl_delay = ttl_delay
        self.stack_log_dir = stack_log_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalDynamoDB:
        ensure_free(self.host, self.port, "local DynamoDB")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        command = [sys.executable, "-m", "harness.stack.moto_server", "-H", self.host, "-p", str(self.port)]
        if self.ttl_delay is not None:
            command += ["--ttl-delay", str(self.ttl_delay)]
        if self.stack_log_dir is not None:
            command += ["--stack-log-dir", self.stack_log_dir]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DynamoDBUnavailable(f"moto server exited with status {self.process.returncode} on start")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)  # polling a starting process, with a deadline
        self.stop()
        raise DynamoDBUnavailable(f"moto server did not answer on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def reset(self) -> None:
        """Forget every table and item (moto's own reset endpoint)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def __enter__(self) -> LocalDynamoDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client(endpoint: str, service: str = "dynamodb", region: str = "us-east-1") -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=region, **LOCAL_CREDENTIALS)


def create_tables(dynamodb: Any, specs: list[TableSpec]) -> dict[str, str | None]:
    """Create each table as the template declares it; returns table name -> stream ARN."""
    streams: dict[str, str | None] = {}
    for spec in specs:
        kwargs: dict[str, Any] = {"TableName": spec.name, "KeySchema": spec.key_schema,
                                  "AttributeDefinitions": spec.attribute_definitions,
                                  "BillingMode": "PAY_PER_REQUEST"}
        if spec.stream_view_type:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": spec.stream_view_type}
        description = dynamodb.create_table(**kwargs)["TableDescription"]
        if spec.ttl_attribute:
            dynamodb.update_time_to_live(TableName=spec.name, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": spec.ttl_attribute})
        streams[spec.name] = description.get("LatestStreamArn")
    return streams
