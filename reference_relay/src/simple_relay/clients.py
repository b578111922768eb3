"""boto3 clients, configured only by boto3's standard settings and cached per warm instance.

Endpoints (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``; the management API's comes from
the event or the template, as on AWS), region, trust (``AWS_CA_BUNDLE``) and retry behaviour
(``AWS_RETRY_MODE``, ``AWS_MAX_ATTEMPTS``; the template sets standard mode, 5 attempts) all come
from the environment, so the same code talks to AWS or to local servers.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
             "AWS_CA_BUNDLE")
_CONFIG = Config(connect_timeout=3, read_timeout=10)


def _region() -> str | None:
    # Lambda sets AWS_REGION; botocore itself only reads AWS_DEFAULT_REGION.
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


@lru_cache(maxsize=16)
def _cached(service: str, endpoint_url: str | None, environment: tuple[str | None, ...]) -> Any:
    if service == "dynamodb":
        # The resource's client (de)serialises plain Python values, which keeps the code readable.
        return boto3.resource("dynamodb", region_name=_region(), config=_CONFIG).meta.client
    return boto3.client(service, region_name=_region(), endpoint_url=endpoint_url, config=_CONFIG)


def client(service: str, endpoint_url: str | None = None) -> Any:
    """A client for ``service``; rebuilt only when the settings it was built from change."""
    service_env = f"AWS_ENDPOINT_URL_{service.upper()}"
    environment = tuple(os.environ.get(name) for name in (*_SETTINGS, service_env))
    return _cached(service, endpoint_url, environment)
