"""What a checkpoint file is: its format, how it is written (atomically) and read (weights only).

Apart from the training loop because everyone who reads a checkpoint -- `granet run --resume`, export,
eval, bench-sparse -- must read it the same safe way: `torch.load(weights_only=True)` only, a format
name and version, the run it belongs to, and RNG states stored as tensors and plain types, so that no
checkpoint from shared storage can run code.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .text import one_line as _one_line

CHECKPOINT = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file that is refused (unsafe, unreadable, or another run's): one line naming it."""


def rng_state(loader_gen: torch.Generator | None) -> dict[str, Any]:
    """Every RNG's state as tensors and plain numbers: a checkpoint loads with weights_only=True."""
    _, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "loader": loader_gen.get_state() if loader_gen is not None else None,
    }


def set_rng_state(state: dict[str, Any], loader_gen: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if loader_gen is not None and state.get("loader") is not None:
        loader_gen.set_state(state["loader"])


def save_atomic(obj: Any, path: Path) -> None:
    """Write `path` via a temp file and a rename: the previous checkpoint survives any failed write.

    torch.save writes through a Python file, so a full disk is an OSError(ENOSPC) (torch's own
    writer reports it as "unexpected pos"); it becomes OSError(ENOSPC, "no space left on <folder>")
    after the partial temp file is removed. Other write errors are re-raised as they are."""
    import errno

    from .safe_io import atomic_path

    try:
        with atomic_path(path, "checkpoint") as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:
        if getattr(e, "errno", None) == errno.ENOSPC or "no space left" in str(e).lower():
            raise OSError(
                errno.ENOSPC, f"no space left on {path.parent} (writing checkpoint {path.name})", str(path)
            ) from None
        raise


#: what a checkpoint.pt holds (a dict of tensors and plain types: it loads with weights_only=True)
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "granet-checkpoint", 2


def safe_torch_load(path: Path, map_location: Any = "cpu") -> Any:
    """torch.load(weights_only=True), without the warnings torch prints about foreign pickles."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True)


def weights_only_reason(e: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to unpickle in full."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return _one_line(text, 100)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A granet checkpoint, read with torch.load(weights_only=True): it can hold no code to run.

    Anything else (a foreign or older file that needs full unpickling, a truncated file, another
    format) is a CheckpointError naming the file; there is never a fallback to full unpickling."""
    try:
        ckpt = safe_torch_load(path, map_location)
    except pickle.UnpicklingError as e:
        why = weights_only_reason(e)
        raise CheckpointError(
            f"{path}: refused, it does not load with torch.load(weights_only=True) ({why}); granet never "
            "unpickles code from a checkpoint (an older granet's or a foreign file)"
        ) from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line naming it
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_one_line(e, 120)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a granet checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {_one_line(repr(ckpt.get('format_version')), 20)}, "
            f"this granet reads {CHECKPOINT_VERSION}"
        )
    missing = [k for k in ("model", "epoch") if k not in ckpt]
    if missing or not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path}: not a granet checkpoint (no {', '.join(missing) or 'model'})")
    return ckpt


def check_owner(ckpt: dict[str, Any], path: Path, run_id: str | None, spec_hash: str | None) -> None:
    """A checkpoint belongs to one run: refuse one whose spec hash or run id is another's. (A sweep
    trial's checkpoint names no run id: Ray Tune's marker beside it does, and its spec hash is checked.)"""
    for key, want in (("spec_hash", spec_hash), ("run_id", run_id)):
        have = ckpt.get(key)
        if want is not None and (have is not None or key == "spec_hash") and have != want:
            raise CheckpointError(
                f"{path}: belongs to {key.replace('_', ' ')} {_one_line(str(have), 40)}, not {want} "
                "(copied from another run folder?)"
            )


def run_identity(run_dir: Path) -> str | None:
    """The run id in run_dir/run.json (written by `granet run`), if any."""
    try:
        run_id = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None
