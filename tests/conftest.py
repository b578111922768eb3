from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.stack.dynamodb import LocalDynamoDB
from harness.stack.management_api import ManagementApiServer, RecordingConnections
from tests.relay_support import LocalRelay


@pytest.fixture(scope="session")
def local_dynamodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDynamoDB]:
    with LocalDynamoDB(stack_log_dir=str(tmp_path_factory.mktemp("local-dynamodb-log"))) as ddb:
        yield ddb


@pytest.fixture(scope="session")
def management() -> Iterator[tuple[ManagementApiServer, RecordingConnections]]:
    connections = RecordingConnections()
    server = ManagementApiServer(connections).start()
    yield server, connections
    server.stop()


@pytest.fixture
def relay_factory(local_dynamodb, management, monkeypatch):
    server, _ = management

    def make(**overrides: str) -> LocalRelay:
        connections = RecordingConnections()
        server.connections = connections
        relay = LocalRelay(local_dynamodb, server, connections, overrides)
        for key, value in relay.environment.items():
            monkeypatch.setenv(key, value)
        return relay

    return make


@pytest.fixture
def relay(relay_factory) -> LocalRelay:
    return relay_factory()


def pytest_configure(config: pytest.Config) -> None:
    # Handlers under test must never reach real AWS, whatever the developer's shell has set.
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(key, None)
