"""What produced a report: versions, the git commit, and each configuration's full spec.

Versions come from package metadata (no heavy imports: reading Ray's version must not
start Ray). The commit is the checkout granet runs from, when it is a git work tree.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (("granet", "granet-cli"), ("torch", "torch"), ("ray", "ray"), ("duckdb", "duckdb"))


def versions() -> dict[str, str]:
    out = {}
    for label, dist in PACKAGES:
        try:
            out[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[label] = "not installed"
    return out


def git_commit(where: Path = Path(__file__).resolve().parent) -> str | None:
    """The commit (with "-dirty" when the tree has changes) granet runs from, if any."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, str]:
    info = versions()
    info["commit"] = git_commit() or "unknown (not a git checkout)"
    return info
