r"""Which WebSocket API features of a template the local gateway can run; the others are refused
when the stack starts, with one line naming the resource and what to change, so a relay never runs
locally with a feature silently missing (README: "What the local WebSocket API refuses").

Runs: Lambda proxy integrations (``AWS_PROXY``), routes without authorization, one-way routes,
and route selection expressions in API Gateway's selection language over the message body:
variables ``$request.body.<path>`` or ``${request.body.<path>}``, text around and between them
(``${request.body.version}-beta``), ``\$`` for a literal dollar (``\$default``: every message to
``$default``).
Refused (``TemplateError``): other integration types (``AWS``, ``HTTP``, ``HTTP_PROXY``, ``MOCK``:
nothing here can run them), authorizers (``AuthorizationType`` ``CUSTOM`` / ``AWS_IAM``, an
``AuthorizerId``, an ``AWS::ApiGatewayV2::Authorizer``), API keys (``ApiKeyRequired``), two-way
routes (``RouteResponseSelectionExpression``, ``AWS::ApiGatewayV2::RouteResponse``: the local
gateway never sends an integration's answer back to the socket), and selection expressions with
any other variable (``$request.header...``, ``$context...``: nothing to evaluate them against).
Sources: API Gateway's developer guide, "Create routes for WebSocket APIs" (route selection),
"WebSocket selection expressions" (the language), "Set up route responses for WebSocket APIs"
(two-way routes), "Control and manage access to WebSocket APIs" (authorizers).
"""

from __future__ import annotations

import re
from typing import Any

from .template import TemplateError

# One token of a selection expression: an escaped dollar, a variable (braced or bare), or one character.
_TOKEN = re.compile(r"\\\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z0-9_.-]*)|(?P<char>.)", re.S)
_BODY = "request.body."

Selection = list[str | list[str]]  # literal text and JSON paths into the message body, in order


def parse_selection(expression: str) -> Selection | None:
    r"""A route selection expression as literal text and body paths (``"${request.body.v}-beta"`` ->
    ``[["v"], "-beta"]``), or None when it names a variable other than ``request.body.<path>``.
    Rules (API Gateway developer guide, "WebSocket selection expressions"): ``$`` starts a variable,
    braces may bound it, ``\$`` is a literal dollar; every other character is literal text."""
    parts: Selection = []
    for token in _TOKEN.finditer(expression.strip()):
        variable = token.group("braced") if token.group("braced") is not None else token.group("bare")
        if variable is None:
            text = "$" if token.group(0) == "\\$" else token.group("char")
            if parts and isinstance(parts[-1], str):
                parts[-1] += text
            else:
                parts.append(text)
        elif variable.startswith(_BODY) and len(variable) > len(_BODY):
            parts.append(variable[len(_BODY):].split("."))
        else:
            return None
    return parts


def selection_key(selection: Selection, body: Any) -> str | None:
    """The route key ``selection`` gives for a parsed JSON ``body``; None when a path has no string
    or number there (the message then goes to ``$default``). Numbers count as their text, as API
    Gateway stringifies a selected value."""
    key = []
    for part in selection:
        if isinstance(part, str):
            key.append(part)
            continue
        value = body
        for name in part:
            value = value.get(name) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        key.append(value if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value))
    return "".join(key)


def check_api(name: str, props: dict[str, Any]) -> None:
    expression = props.get("RouteSelectionExpression", "$request.body.action")
    if parse_selection(str(expression)) is None:
        raise TemplateError(f"{name}: RouteSelectionExpression {expression!r} names a variable the local gateway "
                            "cannot evaluate; use $request.body.<path> (e.g. $request.body.action), or \\$default")


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
