"""What a SAM template deploys, as the local stack needs it: functions, routes, event sources.

Names follow one local convention: a function is named after its logical id, a resource's Ref is
its logical id unless it has a physical name (tables), and ARNs are shaped like AWS's. Resources
whose Condition is false are left out. A function's Layers that are LayerVersions of the template
with a local ContentUri put that folder's ``python/`` on its import path, as Lambda puts
``/opt/python``; layers given by ARN are not available locally and are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import websocket_template
from .runtime import FunctionSpec
from .template import Context, Template, TemplateError, resolve, table_specs

_FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")


@dataclass(frozen=True)
class StreamSource:
    function: str
    stream_arn: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class Schedule:
    function: str
    rule_name: str
    expression: str
    enabled: bool


@dataclass
class Deployment:
    template: Template
    context: Context
    stage: str
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    selection_expression: str = "$request.body.action"
    websocket_apis: set[str] = field(default_factory=set)  # the WEBSOCKET APIs' Ref values
    websocket_routes: dict[str, str] = field(default_factory=dict)
    http_routes: list[tuple[str, str, str]] = field(default_factory=list)
    streams: list[StreamSource] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)


def deployment_context(template: Template, *, stack_name: str = "local", region: str = "us-east-1",
                       account: str = "000000000000", parameters: dict[str, str] | None = None,
                       stream_arns: dict[str, str] | None = None) -> Context:
    """Refs and attributes for every resource, with tables' real names and streams' real ARNs."""
    params = {**template.parameter_defaults(), **(parameters or {})}
    base = Context(stack_name, region, account, params)
    conditions = template.conditions(base)
    base = Context(stack_name, region, account, params, conditions=conditions)
    references: dict[str, str] = {}
    attributes: dict[tuple[str, str], str] = {}
    for logical_id, resource in template.resources.items():
        service = resource.get("Type", "AWS::Unknown::Thing").split("::")[1].lower()
        references[logical_id] = logical_id
        attributes[(logical_id, "Arn")] = f"arn:aws:{service}:{region}:{account}:{logical_id}"
        if resource.get("Type") in _FUNCTION_TYPES:
            attributes[(logical_id, "Arn")] = f"arn:aws:lambda:{region}:{account}:function:{logical_id}"
    for spec in table_specs(template, base):
        references[spec.logical_id] = spec.name
        attributes[(spec.logical_id, "Arn")] = f"arn:aws:dynamodb:{region}:{account}:table/{spec.name}"
        attributes[(spec.logical_id, "StreamArn")] = (stream_arns or {}).get(spec.name) or (
            f"arn:aws:dynamodb:{region}:{account}:table/{spec.name}/stream/local")
    return Context(stack_name, region, account, params, references, attributes, conditions)


def _function_spec(template: Template, logical_id: str, context: Context) -> FunctionSpec:
    props = resolve(template.function_properties(logical_id), context, logical_id)
    code_uri = props.get("CodeUri") or props.get("Code") or "."
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: CodeUri must be a local folder to run locally, not {code_uri!r}")
    handler = props.get("Handler")
    if not handler:
        raise TemplateError(f"{logical_id}: no Handler; the local runtime runs handlers named by Handler")
    variables = (props.get("Environment") or {}).get("Variables") or {}
    return FunctionSpec(
        logical_id=logical_id, name=logical_id, handler=handler, code_dir=(template.path.parent / code_uri).resolve(),
        environment={k: str(v) for k, v in variables.items() if v is not None},
        timeout=float(props.get("Timeout", 3)), memory_mb=int(props.get("MemorySize", 128)),
        runtime=str(props.get("Runtime") or ""),
        layer_dirs=tuple(_layer_dir(template, str(layer), context, logical_id) for layer in props.get("Layers") or []
                         if str(layer) in template.of_type("AWS::Serverless::LayerVersion", context)))


def _layer_dir(template: Template, logical_id: str, context: Context, function: str) -> Path:
    content = resolve(template.resources[logical_id].get("Properties", {}).get("ContentUri"), context, logical_id)
    if not isinstance(content, str):
        raise TemplateError(f"{function}: layer {logical_id}'s ContentUri must be a local folder to run locally, "
                            f"not {content!r}")
    return (template.path.parent / content / "python").resolve()


def _function_of_uri(uri: str, functions: dict[str, FunctionSpec], where: str) -> str:
    found = re.search(r"function:([A-Za-z0-9_-]+)", uri)
    if not found or found.group(1) not in functions:
        raise TemplateError(f"{where}: integration {uri!r} does not name a function of this template")
    return found.group(1)


def load_deployment(template: Template, context: Context) -> Deployment:
    functions = {logical_id: _function_spec(template, logical_id, context)
                 for logical_id, resource in template.present(context).items()
                 if resource.get("Type") in _FUNCTION_TYPES}
    stages = [resolve(r.get("Properties", {}), context, name).get("StageName")
              for name, r in template.of_type("AWS::ApiGatewayV2::Stage", context).items()]
    deployment = Deployment(template, context, stage=next((s for s in stages if s), "production"),
                            functions=functions)

    websocket_apis = {name for name, r in template.of_type("AWS::ApiGatewayV2::Api", context).items()
                      if r.get("Properties", {}).get("ProtocolType") == "WEBSOCKET"}
    for name in websocket_apis:
        props = template.resources[name]["Properties"]
        websocket_template.check_api(name, props)
        deployment.selection_expression = props.get("RouteSelectionExpression", "$request.body.action")
        deployment.websocket_apis.add(str(context.references.get(name, name)))
    for name, resource in template.present(context).items():
        if resolve(resource.get("Properties", {}).get("ApiId"), context, name) in websocket_apis:
            websocket_template.check_resource(name, str(resource.get("Type")))
    integrations = template.of_type("AWS::ApiGatewayV2::Integration", context)
    for name, route in template.of_type("AWS::ApiGatewayV2::Route", context).items():
        props = resolve(route.get("Properties", {}), context, name)
        if props.get("ApiId") not in websocket_apis:
            continue
        websocket_template.check_route(name, props)
        target = str(props.get("Target", ""))
        integration = target.removeprefix("integrations/")
        if integration not in integrations:
            raise TemplateError(f"{name}: Target {target!r} is not an integration of this template")
        websocket_template.check_integration(integration, integrations[integration].get("Properties", {}))
        uri = resolve(integrations[integration]["Properties"].get("IntegrationUri", ""), context, integration)
        deployment.websocket_routes[props["RouteKey"]] = _function_of_uri(str(uri), functions, integration)

    for logical_id, resource in template.of_type("AWS::Serverless::Function", context).items():
        for event_name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            kind = event.get("Type")
            props = resolve(event.get("Properties", {}), context, f"{logical_id}.{event_name}")
            if kind in ("HttpApi", "Api"):
                deployment.http_routes.append((str(props.get("Method", "ANY")).upper(),
                                               props.get("Path", "/"), logical_id))
            elif kind == "DynamoDB":
                deployment.streams.append(StreamSource(logical_id, props["Stream"], props))
            elif kind in ("Schedule", "ScheduleV2"):
                enabled = props.get("Enabled", props.get("State", "ENABLED") != "DISABLED")
                deployment.schedules.append(Schedule(
                    logical_id, props.get("Name") or f"{context.stack_name}-{logical_id}-{event_name}",
                    props.get("Schedule") or props.get("ScheduleExpression"), enabled in (True, "true", "ENABLED")))
    return deployment
