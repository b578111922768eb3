"""Reading a SAM template into what the local stack needs: tables, functions, their settings.

Only the intrinsic functions a relay template uses for names and settings are resolved (Ref,
Sub, GetAtt, Join, Select, If with ``AWS::NoValue``); anything else raises ``TemplateError`` naming
the resource and value, so an unsupported template fails loudly instead of running half-configured.
Conditions (Equals, Not, And, Or, Condition) are evaluated against the parameters, and a resource
whose ``Condition`` is false does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) as their long forms."""


def _tag(tag: str, long_name: str) -> None:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if long_name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {long_name: value}

    _Loader.add_constructor(tag, construct)


for _short in ("Base64", "Cidr", "FindInMap", "GetAtt", "GetAZs", "ImportValue", "Join", "Select", "Split",
               "Sub", "Transform", "And", "Equals", "If", "Not", "Or", "Condition"):
    _tag(f"!{_short}", "Condition" if _short == "Condition" else f"Fn::{_short}")
_tag("!Ref", "Ref")


@dataclass(frozen=True)
class Context:
    """What pseudo parameters and references resolve to in one local deployment."""

    stack_name: str = "local"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    parameters: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    conditions: dict[str, bool] = field(default_factory=dict)


class Template:
    def __init__(self, path: Path, body: dict[str, Any]) -> None:
        self.path = path
        self.body = body

    @classmethod
    def load(cls, path: str | Path) -> Template:
        path = Path(path)
        if not path.is_file():
            raise TemplateError(f"template {path} not found: pass the path of a SAM template.yaml")
        try:
            body = yaml.load(path.read_text(), Loader=_Loader)
        except yaml.YAMLError as exc:
            raise TemplateError(f"template {path} is not valid YAML: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("Resources"), dict):
            raise TemplateError(f"template {path} has no Resources section")
        return cls(path, body)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.body["Resources"]

    def present(self, context: Context) -> dict[str, dict[str, Any]]:
        """The resources that exist under ``context``'s conditions."""
        return {name: r for name, r in self.resources.items() if _exists(name, r, context)}

    def of_type(self, resource_type: str, context: Context) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.present(context).items() if r.get("Type") == resource_type}

    def conditions(self, context: Context) -> dict[str, bool]:
        """Every condition of the template, evaluated against ``context``'s parameters."""
        raw = self.body.get("Conditions") or {}
        values: dict[str, bool] = {}

        def evaluate(name: str, seen: tuple[str, ...]) -> bool:
            if name not in raw:
                raise TemplateError(f"condition {name!r} is not defined in Conditions")
            if name in seen:
                raise TemplateError(f"condition {name!r} refers to itself")
            if name not in values:
                values[name] = _condition(raw[name], context, lambda n: evaluate(n, (*seen, name)), name)
            return values[name]

        for name in raw:
            evaluate(name, ())
        return values

    def parameter_defaults(self) -> dict[str, str]:
        return {name: str(p["Default"]) for name, p in self.body.get("Parameters", {}).items() if "Default" in p}

    def function_properties(self, logical_id: str) -> dict[str, Any]:
        """The function's properties with the template's Globals merged in, as SAM does."""
        merged = dict(self.body.get("Globals", {}).get("Function", {}))
        own = self.resources[logical_id].get("Properties", {})
        for key, value in own.items():
            if key == "Environment" and "Environment" in merged:
                variables = {**merged["Environment"].get("Variables", {}),
                             **value.get("Variables", {})}
                merged["Environment"] = {"Variables": variables}
            else:
                merged[key] = value
        return merged


def _exists(name: str, resource: dict[str, Any], context: Context) -> bool:
    condition = resource.get("Condition")
    if condition is None:
        return True
    if condition not in context.conditions:
        raise TemplateError(f"{name}: Condition {condition!r} is not defined in Conditions")
    return context.conditions[condition]


def _condition(value: Any, context: Context, named: Any, where: str) -> bool:
    """One condition expression; ``named(name)`` evaluates a ``Condition`` it refers to."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Condition":
            return named(arg)
        if key == "Fn::Equals" and isinstance(arg, list) and len(arg) == 2:
            return str(resolve(arg[0], context, where)) == str(resolve(arg[1], context, where))
        if key == "Fn::Not" and isinstance(arg, list) and len(arg) == 1:
            return not _condition(arg[0], context, named, where)
        if key in ("Fn::And", "Fn::Or") and isinstance(arg, list):
            results = [_condition(a, context, named, where) for a in arg]
            return all(results) if key == "Fn::And" else any(results)
    raise TemplateError(f"condition {where}: {value!r} is not Equals, Not, And, Or or Condition")


_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")
_NO_VALUE = object()  # !Ref AWS::NoValue: the property, or the list item, is left out


def resolve(value: Any, context: Context, where: str = "template") -> Any:
    """Resolve the intrinsic functions in ``value`` against ``context`` (``AWS::NoValue`` leaves its
    key or list item out; on its own it is None)."""
    resolved = _resolve(value, context, where)
    return None if resolved is _NO_VALUE else resolved


def _resolve(value: Any, context: Context, where: str) -> Any:
    if isinstance(value, list):
        items = [_resolve(v, context, where) for v in value]
        return [item for item in items if item is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or not (set(value) & {"Ref", "Condition"} or next(iter(value)).startswith("Fn::")):
        items = {k: _resolve(v, context, f"{where}.{k}") for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not _NO_VALUE}
    (key, arg), = value.items()
    if key == "Fn::If":
        if not (isinstance(arg, list) and len(arg) == 3 and arg[0] in context.conditions):
            raise TemplateError(f"{where}: !If needs [a condition of Conditions, value if true, value if false], "
                                f"not {arg!r}")
        return _resolve(arg[1] if context.conditions[arg[0]] else arg[2], context, where)
    if key == "Ref":
        return _ref(arg, context, where)
    if key == "Fn::GetAtt":
        resource, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
        try:
            return context.attributes[(resource, attribute)]
        except KeyError:
            raise TemplateError(f"{where}: !GetAtt {resource}.{attribute} has no local value") from None
    if key == "Fn::Sub":
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], context, where))

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name:
                return str(resolve({"Fn::GetAtt": name.split(".", 1)}, context, where))
            return str(_ref(name, context, where))

        return _SUB_VARIABLE.sub(substitute, text)
    if key == "Fn::Join":
        separator, parts = arg
        return separator.join(str(p) for p in resolve(parts, context, where))
    if key == "Fn::Select":
        index, items = arg
        return resolve(items, context, where)[int(index)]
    raise TemplateError(f"{where}: {key} is not supported by the local stack")


def _ref(name: str, context: Context, where: str) -> Any:
    pseudo = {"AWS::StackName": context.stack_name, "AWS::Region": context.region,
              "AWS::AccountId": context.account_id, "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
              "AWS::NoValue": _NO_VALUE}
    if name in pseudo:
        return pseudo[name]
    if name in context.parameters:
        return context.parameters[name]
    if name in context.references:
        return context.references[name]
    raise TemplateError(f"{where}: !Ref {name} has no local value")


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    stream_view_type: str | None
    ttl_attribute: str | None


def table_specs(template: Template, context: Context) -> list[TableSpec]:
    specs = []
    for logical_id, resource in template.of_type("AWS::DynamoDB::Table", context).items():
        props = resolve(resource.get("Properties", {}), context, logical_id)
        ttl = props.get("TimeToLiveSpecification") or {}
        specs.append(TableSpec(
            logical_id=logical_id,
            name=props.get("TableName") or f"{context.stack_name}-{logical_id}",
            key_schema=props["KeySchema"],
            attribute_definitions=props["AttributeDefinitions"],
            stream_view_type=(props.get("StreamSpecification") or {}).get("StreamViewType"),
            ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") in (True, "true") else None,
        ))
    return specs
