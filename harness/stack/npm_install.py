"""A Node function folder's npm dependencies, installed once before the stack starts, as ``sam build``
does for a ``nodejs*`` function (its NodejsNpmBuilder: ``npm ci`` with a lock file, else
``npm install``, production dependencies only)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path


class NpmError(Exception):
    """The dependencies could not be installed; one line naming the folder and npm's last error."""


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if ("ERR" in line or line.startswith("npm error")) and "complete log" not in line]
    return (errors or lines or ["no output"])[-1]


def install_dependencies(folder: Path, npm: str | None, announce: Callable[[str], None]) -> bool:
    """Install ``folder``'s dependencies if it has a package.json and no node_modules; True if it did.

    ``announce`` gets one progress line before npm runs. Raises ``NpmError`` if npm is missing or fails.
    """
    if not (folder / "package.json").is_file() or (folder / "node_modules").exists():
        return False
    command = ["ci" if (folder / "package-lock.json").is_file() else "install", "--omit=dev"]
    if npm is None:
        raise NpmError(f"{folder} has a package.json but no node_modules, and npm is not on PATH: install "
                       f"Node.js with npm (Debian/Ubuntu: apt-get install nodejs npm) or run npm install there")
    announce(f"installing the npm dependencies of {folder} (npm {' '.join(command)}) ...")
    try:
        done = subprocess.run([npm, *command, "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                              capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NpmError(f"npm {' '.join(command)} in {folder} failed: {exc}") from None
    if done.returncode != 0:
        raise NpmError(f"npm {' '.join(command)} in {folder} failed: {_last_error(done.stderr + done.stdout)}")
    return True
