"""The template's own execute-api URLs, made to point at the local stack.

A relay's template often hands its functions the management endpoint as a variable, built the way
AWS documents it: ``!Sub https://${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/${Stage}``
(API Gateway developer guide, "Use @connections commands in your backend service"). Locally that
host does not exist. A variable whose whole value, once resolved, is an ``https://`` URL on the
default execute-api host of a WebSocket API *of this template*, in the stack's region, gets the
local HTTPS ``@connections`` listener's ``host:port`` instead, path kept
(``https://127.0.0.1:PORT/production``). The same URL without its scheme
(``${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/${Stage}``, as the original Simple
Relay passes it: aws-sdk v2 takes an endpoint without a scheme as ``https://``) keeps having none.
That is what the value means in this deployment, as CloudFormation would resolve it to the
deployed API's host on AWS.

Nothing else is touched: a URL naming another API id (a literal one), another host, or a value
with more around the URL is used as written, so it fails here as it would on AWS instead of being
quietly sent somewhere else. SDK calls are not redirected at run time (LocalStack does that with
its own DNS server for ``*.amazonaws.com``; that needs a resolver and a certificate for AWS's names,
and redirects endpoints the code did not mean to be local).
"""

from __future__ import annotations

import re

_EXECUTE_API_URL = re.compile(
    r"(?P<scheme>https://)?(?P<api>[A-Za-z0-9-]+)\.execute-api\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<path>/\S*)?")


def localise(value: str, apis: set[str], region: str, authority: str) -> str:
    """``value`` with the host of a whole-value execute-api URL of one of ``apis`` (the APIs' Ref
    values) in ``region`` replaced by ``authority`` (``host:port``); any other value as given."""
    found = _EXECUTE_API_URL.fullmatch(value)
    if found is None or found["api"] not in apis or found["region"] != region:
        return value
    return f"{found['scheme'] or ''}{authority}{found['path'] or ''}"


def localise_all(variables: dict[str, str], apis: set[str], region: str, authority: str) -> dict[str, str]:
    """Every variable through ``localise``."""
    return {name: localise(value, apis, region, authority) for name, value in variables.items()}
