from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.stack.dynamodb import LocalDynamoDB
from harness.stack.local_ca import LocalCA
from harness.stack.management_api import ManagementApiServer, RecordingConnections
from tests.relay_support import LocalRelay


@pytest.fixture(scope="session")
def local_dynamodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDynamoDB]:
    with LocalDynamoDB(stack_log_dir=str(tmp_path_factory.mktemp("local-dynamodb-log"))) as ddb:
        yield ddb


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("tls"), ("127.0.0.1",))


@pytest.fixture(scope="session")
def management(local_ca) -> Iterator[tuple[ManagementApiServer, RecordingConnections]]:
    """``@connections`` over HTTPS, as the local stack serves it to the events' ``domainName``."""
    connections = RecordingConnections()
    server = ManagementApiServer(connections, tls=local_ca.server_context()).start()
    yield server, connections
    server.stop()


@pytest.fixture
def relay_factory(local_dynamodb, management, local_ca, monkeypatch):
    server, _ = management

    def make(**overrides: str) -> LocalRelay:
        connections = RecordingConnections()
        server.connections = connections
        relay = LocalRelay(local_dynamodb, server, connections, local_ca, overrides)
        for key, value in relay.environment.items():
            monkeypatch.setenv(key, value)
        return relay

    return make


@pytest.fixture
def refuse_profile(tmp_path):
    """``refuse_profile(toml_text, says)``: loading a profile of that text fails with exactly ``says``."""
    import re

    from harness.faults.profile import ProfileError, load_profile

    def refuse(text: str, says: str) -> None:
        path = tmp_path / "p.toml"
        path.write_text(text)
        with pytest.raises(ProfileError, match=re.escape(says)):
            load_profile(str(path))

    return refuse


@pytest.fixture
def relay(relay_factory) -> LocalRelay:
    return relay_factory()


def pytest_configure(config: pytest.Config) -> None:
    # Handlers under test must never reach real AWS, whatever the developer's shell has set.
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(key, None)


@pytest.fixture(scope="session")
def fork_server():
    """Where Python functions made directly by a test (``PythonFunction``) fork their instances."""
    from harness.stack.fork_server import ForkServer

    server = ForkServer().start()
    yield server
    server.stop()
