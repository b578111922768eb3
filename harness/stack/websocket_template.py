"""Which WebSocket API features of a template the local gateway can run; the others are refused
when the stack starts, with one line naming the resource and what to change, so a relay never runs
locally with a feature silently missing (README: "What the local WebSocket API refuses").

Runs: Lambda proxy integrations (``AWS_PROXY``), routes without authorization, one-way routes,
and a route selection expression ``$request.body.<path>`` or ``${request.body.<path>}``.
Refused (``TemplateError``): other integration types (``AWS``, ``HTTP``, ``HTTP_PROXY``, ``MOCK``:
nothing here can run them), authorizers (``AuthorizationType`` ``CUSTOM`` / ``AWS_IAM``, an
``AuthorizerId``, an ``AWS::ApiGatewayV2::Authorizer``), API keys (``ApiKeyRequired``), two-way
routes (``RouteResponseSelectionExpression``, ``AWS::ApiGatewayV2::RouteResponse``: the local
gateway never sends an integration's answer back to the socket), and any other selection
expression. Sources: API Gateway's developer guide, "Create routes for WebSocket APIs" (route
selection), "Set up route responses for WebSocket APIs" (two-way routes), "Control and manage
access to WebSocket APIs" (authorizers).
"""

from __future__ import annotations

import re
from typing import Any

from .template import TemplateError

_SELECTION = re.compile(r"\$request\.body\.(?P<bare>[^${}\s]+)|\$\{request\.body\.(?P<braced>[^${}\s]+)\}")


def route_value(expression: str) -> list[str] | None:
    """The JSON path a route selection expression reads from the message body (``["action"]`` for
    ``$request.body.action``), or None for an expression the local gateway cannot evaluate."""
    found = _SELECTION.fullmatch(expression.strip())
    if not found:
        return None
    return (found.group("bare") or found.group("braced")).split(".")


def check_api(name: str, props: dict[str, Any]) -> None:
    expression = props.get("RouteSelectionExpression", "$request.body.action")
    if route_value(str(expression)) is None:
        raise TemplateError(f"{name}: RouteSelectionExpression {expression!r} is not supported by the local "
                            "gateway; use $request.body.<path> (e.g. $request.body.action)")


def check_route(name: str, props: dict[str, Any]) -> None:
    authorization = str(props.get("AuthorizationType") or "NONE")
    if authorization != "NONE" or props.get("AuthorizerId"):
        raise TemplateError(f"{name}: AuthorizationType {authorization} (authorizers) is not emulated by the local "
                            "gateway; leave it out (NONE) and check credentials in $connect instead")
    if props.get("ApiKeyRequired") in (True, "true"):
        raise TemplateError(f"{name}: ApiKeyRequired is not emulated by the local gateway; leave it out")
    if props.get("RouteResponseSelectionExpression"):
        raise TemplateError(f"{name}: two-way routes (RouteResponseSelectionExpression) are not emulated: the local "
                            "gateway never sends the integration's answer to the socket; answer with "
                            "PostToConnection instead")


def check_integration(name: str, props: dict[str, Any]) -> None:
    kind = str(props.get("IntegrationType", ""))
    if kind != "AWS_PROXY":
        raise TemplateError(f"{name}: IntegrationType {kind or '(none)'} cannot run on the local gateway; only Lambda "
                            "proxy integrations (AWS_PROXY) can")


_REFUSED_RESOURCES = {
    "AWS::ApiGatewayV2::RouteResponse": "two-way routes (route responses) are not emulated: the local gateway never "
                                        "sends the integration's answer to the socket; answer with PostToConnection",
    "AWS::ApiGatewayV2::Authorizer": "authorizers are not emulated by the local gateway; check credentials in "
                                     "$connect instead",
    "AWS::ApiGatewayV2::IntegrationResponse": "integration responses (two-way routes) are not emulated by the local "
                                              "gateway",
}


def check_resource(name: str, resource_type: str) -> None:
    """Refuse a resource of a WebSocket API that the local gateway cannot honour."""
    if resource_type in _REFUSED_RESOURCES:
        raise TemplateError(f"{name}: {_REFUSED_RESOURCES[resource_type]}")
