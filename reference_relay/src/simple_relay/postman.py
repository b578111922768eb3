"""Sends frames to sockets through the API Gateway management API (``@connections``)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from . import clients
from .messages import Message, encode


class DeliveryFailed(Exception):
    """The frame could not be handed to API Gateway (throttled or failing past botocore's retries)."""


def endpoint_from_event(event: dict[str, Any]) -> str:
    context = event["requestContext"]
    return f"https://{context['domainName']}/{context['stage']}"


class Postman:
    def __init__(self, endpoint: str) -> None:
        """``endpoint``: ``https://{domainName}/{stage}``, from the event (``endpoint_from_event``) or
        the template (``WEBSOCKET_API_ENDPOINT``), as API Gateway's documentation builds it."""
        self.client = clients.client("apigatewaymanagementapi", endpoint)

    def send(self, conn_id: str, messages: list[Message]) -> bool:
        """True once API Gateway took the frame; False if the socket is gone (410)."""
        try:
            self.client.post_to_connection(ConnectionId=conn_id, Data=encode(messages))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "GoneException":
                return False
            raise DeliveryFailed(f"{conn_id}: {exc.response['Error']['Code']}") from exc
        return True

    def close(self, conn_id: str) -> None:
        try:
            self.client.delete_connection(ConnectionId=conn_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "GoneException":
                raise DeliveryFailed(f"{conn_id}: {exc.response['Error']['Code']}") from exc
