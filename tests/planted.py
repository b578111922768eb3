"""Relays with a planted bug, for proving that a checker or a fault catches it: the reference relay's
template with some functions swapped for a fixture's handlers, written where a test wants it (so no
fixture carries a copy of the whole template)."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.stack.template import Template

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TEMPLATE = ROOT / "reference_relay" / "template.yaml"


def planted_relay(folder: Path, fixture: str, swaps: dict[str, str], environment: dict[str, str] | None = None
                  ) -> Path:
    """Write ``folder/template.yaml``: the reference relay whose functions named in ``swaps``
    (logical id -> ``module.handler``) run from ``tests/fixtures/<fixture>/`` instead. Short tags
    (``!Ref``) are written in their long form (``Ref:``), which CloudFormation reads the same.
    The fixtures build on ``simple_relay``, so their code folder is bundled as ``sam build`` would
    (``folder/build``: links to the fixture's files and to ``simple_relay``): a function's instance
    imports only from its own code and layers, as on Lambda. ``environment``: variables added to
    the swapped functions' (a function's instance sees only its own)."""
    body = Template.load(REFERENCE_TEMPLATE).body
    body["Globals"]["Function"]["CodeUri"] = str(ROOT / "reference_relay" / "src")
    build = folder / "build"
    build.mkdir(parents=True, exist_ok=True)
    sources = [e for e in (ROOT / "tests" / "fixtures" / fixture).iterdir() if e.name != "__pycache__"]
    for source in [*sources, ROOT / "reference_relay" / "src" / "simple_relay"]:
        if not (build / source.name).is_symlink():
            (build / source.name).symlink_to(source)
    for logical_id, handler in swaps.items():
        properties = body["Resources"][logical_id]["Properties"]
        properties["Handler"] = handler
        properties["CodeUri"] = str(build)
        if environment:
            properties.setdefault("Environment", {}).setdefault("Variables", {}).update(environment)
    path = folder / "template.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path
