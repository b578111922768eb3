"""Chaos profiles: a TOML file of faults on a timeline, for any seam.

    description = "drop a tenth of relayed messages for 20 s, then drop every socket"
    seed = 7                                  # optional; --seed wins
    users = 20                                # optional, the experiment's shape (harness/run_shape.py)
    spawn_rate = 10                           #   for `relay-harness chaos`: players, players started
    duration = 60                             #   per second, seconds of load, public session sizes,
    session_size = "2-4"                      #   clean-up during play, seconds to wait for it after
    short_expiry = true
    cleanup_wait = 40

    [[fault]]
    name = "lossy"
    seam = "wire"                             # the default; later seams join with their own name
    type = "drop"
    direction = "downstream"
    probability = 0.1
    match = { type = "MESSAGE" }
    window = { start = 5, end = 25 }          # seconds after the run starts

    [[fault]]
    type = "mass_disconnect"
    at = 30

    [[fault]]
    seam = "invocation"                       # the seams behind the gateway: harness/faults/plan.py
    type = "error_after"
    match = { function = "StreamFunction" }

    [join_storm]                              # optional: harness/join_storm.py
    players = 6

    [leaks]                                   # optional: the leak checker's thresholds
    min_span_s = 600                          #   (harness/checkers/leaks.py)

Every entry is validated when the profile is loaded, before anything starts: the wire seam's by
``harness/proxy/faults.py``, the others' by ``harness/faults/plan.py``. A bare NAME refers to
``scenarios/profiles/NAME.toml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import run_shape
from ..proxy.faults import FaultSpecError, parse_fault
from .log import FaultLog
from .plan import SEAMS, FaultPlan, PlanError, Rule, parse_rule

PROFILES_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "profiles"
KNOWN_SEAMS = ("wire", *SEAMS)


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str = ""
    seed: int | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    join_storm: Any = None  # harness.join_storm.StormSettings when the profile has a [join_storm] table
    run: dict[str, Any] = field(default_factory=dict)  # the harness.run_shape keys the profile sets
    leaks: Any = None  # harness.checkers.leaks.LeakSettings when the profile has a [leaks] table

    def for_seam(self, seam: str) -> list[dict[str, Any]]:
        return [f for f in self.faults if f.get("seam", "wire") == seam]

    def rules(self) -> list[Rule]:
        """The rules of the seams behind the gateway (already validated by ``load_profile``)."""
        return [parse_rule(f) for f in self.faults if f.get("seam", "wire") != "wire"]


def resolve_profile_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    return PROFILES_DIR / f"{name_or_path}.toml"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    path = resolve_profile_path(name_or_path)
    if not path.is_file():
        known = ", ".join(available_profiles()) or "none"
        raise ProfileError(f"chaos profile {name_or_path!r} not found (looked for {path}); built-in profiles: {known}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"chaos profile {path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"description", "seed", "fault", "join_storm", "leaks", *run_shape.KEYS}
    if unknown:
        raise ProfileError(f"chaos profile {path}: unknown key {sorted(unknown)[0]!r}; a profile has description, "
                           f"seed, {', '.join(run_shape.KEYS)}, [[fault]] entries, a [join_storm] and a [leaks] "
                           "table")
    try:
        run = {key: run_shape.validate(key, data[key]) for key in run_shape.KEYS if key in data}
    except run_shape.ShapeError as exc:
        raise ProfileError(f"chaos profile {path}: {exc}") from None
    faults = data.get("fault", [])
    if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
        raise ProfileError(f"chaos profile {path}: faults are written as [[fault]] tables")
    for index, fault in enumerate(faults):
        fault.setdefault("name", f"{path.stem}-{index + 1}")
        if fault.get("seam", "wire") not in KNOWN_SEAMS:
            raise ProfileError(f"chaos profile {path}: fault {fault['name']!r}: 'seam' must be one of "
                               f"{', '.join(KNOWN_SEAMS)}, not {fault['seam']!r}")
        try:
            parse_fault(fault) if fault.get("seam", "wire") == "wire" else parse_rule(fault)
        except (FaultSpecError, PlanError) as exc:
            raise ProfileError(f"chaos profile {path}: {exc}") from None
    names = [f["name"] for f in faults]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ProfileError(f"chaos profile {path}: two faults are named {duplicated[0]!r}; names must be unique")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ProfileError(f"chaos profile {path}: seed must be a whole number")
    from ..checkers.leaks import LeakSettingsError, parse_settings
    from ..join_storm import StormError, parse_storm

    storm = _section(path, data, "join_storm", parse_storm, StormError)
    leaks = _section(path, data, "leaks", parse_settings, LeakSettingsError)
    return Profile(path.stem, path, str(data.get("description", "")), seed, faults, storm, run, leaks)


def _section(path: Path, data: dict[str, Any], key: str, parse: Any, error: type[Exception]) -> Any:
    """The profile's ``[key]`` table through ``parse`` (None when absent); its ``error`` becomes a
    ProfileError naming the file."""
    if key not in data:
        return None
    try:
        return parse(data[key])
    except error as exc:
        raise ProfileError(f"chaos profile {path}: {exc}") from None


def load_plan(name_or_path: str, seed: int, fault_log: Path | None) -> FaultPlan:
    """The seams behind the gateway's plan from a profile; raises ProfileError for a bad profile."""
    return FaultPlan(load_profile(name_or_path).rules(), seed, FaultLog(fault_log))
