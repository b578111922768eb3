"""Chaos profiles: a TOML file of faults on a timeline, for any seam.

    description = "drop a tenth of relayed messages for 20 s, then drop every socket"
    seed = 7                                  # optional; --seed wins

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

Each seam validates the entries addressed to it; a profile naming a seam nobody serves is an error.
A bare NAME refers to ``scenarios/profiles/NAME.toml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "profiles"
KNOWN_SEAMS = ("wire",)


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str = ""
    seed: int | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)

    def for_seam(self, seam: str) -> list[dict[str, Any]]:
        return [f for f in self.faults if f.get("seam", "wire") == seam]


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
    unknown = set(data) - {"description", "seed", "fault"}
    if unknown:
        raise ProfileError(f"chaos profile {path}: unknown key {sorted(unknown)[0]!r}; "
                           "a profile has description, seed and [[fault]] entries")
    faults = data.get("fault", [])
    if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
        raise ProfileError(f"chaos profile {path}: faults are written as [[fault]] tables")
    for index, fault in enumerate(faults):
        fault.setdefault("name", f"{path.stem}-{index + 1}")
        if fault.get("seam", "wire") not in KNOWN_SEAMS:
            raise ProfileError(f"chaos profile {path}: fault {fault['name']!r} names seam {fault['seam']!r}, which "
                               f"no part of the harness serves yet (served: {', '.join(KNOWN_SEAMS)})")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ProfileError(f"chaos profile {path}: seed must be a whole number")
    return Profile(path.stem, path, str(data.get("description", "")), seed, faults)
