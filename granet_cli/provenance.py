"""What produced a report: versions, the git commit, and each configuration's full spec.

Versions come from package metadata (no heavy imports: reading Ray's version must not
start Ray). The commit is the checkout granet runs from, when it is a git work tree.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    ("granet", "granet-cli"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("numpy", "numpy"),
    ("ray", "ray"),
    ("duckdb", "duckdb"),
)


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
    """Versions (granet, torch, torchvision, numpy, ray, duckdb, python), the commit and this
    machine (``hardware``)."""
    info = versions()
    info["commit"] = git_commit() or "unknown (not a git checkout)"
    info["hardware"] = hardware()
    return info


def versions_line() -> str:
    """The versions as one line: ``python 3.11.9, granet 0.4.0, torch 2.14.1, ...``."""
    return ", ".join([f"python {platform.python_version()}", *(f"{k} {v}" for k, v in versions().items())])


def gpus() -> list[str]:
    """NVIDIA GPU models from the driver's /proc files (no torch, no nvidia-smi); [] if none."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def hardware() -> str:
    """This machine in one line: OS, CPU architecture and cores, GPUs."""
    gpu = gpus()
    gpu_text = ", ".join(f"{n}x {m}" for m, n in _counts(gpu).items()) if gpu else "no NVIDIA GPU"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count() or '?'} CPU cores, {gpu_text}"


def _counts(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out
