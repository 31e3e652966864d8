"""Trained sparse models out of granet: find a run's checkpoint, export it, load it back, re-evaluate it.

`granet export RUN` writes the model of a run's last checkpoint as a plain state_dict of
tensors (loadable with ``torch.load(path, weights_only=True)``, or as safetensors when that
package is installed): every masked weight multiplied by its mask, each mask kept as the
``<module>.weight_mask`` bool tensor the trainer uses, plus a JSON sidecar (``<file>.json``, e.g. ``m.pt.json``)
with the run's normalised spec (``runs.spec_json``) and its row of the results db.

`granet eval` rebuilds the model from the sidecar's spec and evaluates it with the trainer's
own `train.evaluate`. Timing sparse inference (`granet bench-sparse`) is sparse_bench.py's job.
"""

from __future__ import annotations

import errno
import json
import math
import pickle
from collections.abc import Sized
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from .safe_io import PathError, atomic_path, check_regular, write_text
from .text import one_line as _one_line

FORMAT = "granet-export"
FORMAT_VERSION = 1
MASK_SUFFIX = ".weight_mask"


class ExportError(RuntimeError):
    """Bad input to export / eval / bench: a one-line message."""


# ----------------------------------------------------------------------------- finding a run
@dataclass
class RunRef:
    run_id: str
    row: dict[str, Any]  # the runs row of the results db
    run_dir: Path
    checkpoint: Path


def _open_store(db_path: Path):
    from .store import Store, StoreError

    try:
        return Store(db_path, read_only=True)
    except StoreError as e:
        raise ExportError(str(e)) from None


def _run_by_id(store, ref: str) -> dict[str, Any]:
    row = store.run(ref)
    if row is not None:
        return row
    matches = sorted((r for r in store.runs() if str(r["run_id"]).startswith(ref)), key=lambda r: str(r["run_id"]))
    if not matches:
        raise ExportError(
            f"{ref}: no such run in results db {store.path} (give a run id, a unique prefix of one, "
            f"or a run folder with checkpoint.pt)"
        )
    if len(matches) > 1:
        shown = ", ".join(_which(r) for r in matches[:4]) + (", ..." if len(matches) > 4 else "")
        raise ExportError(f"{ref}: prefix matches {len(matches)} runs: {shown}; give more of the run id")
    return matches[0]


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (PK..); older torch a pickle (protocol 2+ starts with 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _which(run: dict[str, Any]) -> str:
    """A run id with what tells it apart from its neighbours: method, target density, seed, status."""
    density = run.get("target_density")
    what = " ".join(
        str(x)
        for x in (
            run.get("method"),
            f"{density:g}" if isinstance(density, (int, float)) else None,
            f"seed {run['seed']}" if run.get("seed") is not None else None,
            run.get("status"),
        )
        if x is not None
    )
    return f"{run['run_id']} ({what})"


#: beside checkpoint.pt in every Ray Tune checkpoint of a sweep trial (sweep.trainable.MARKER)
TUNE_MARKER = "granet_checkpoint.json"


def _run_of_dir(store, run_dir: Path) -> dict[str, Any]:
    """The runs row a checkpoint folder belongs to: run.json of `granet run`, the marker of a sweep
    trial's Tune checkpoint, else runs/sweeps/<sweep_id>/<spec_hash>/ (the latest run of that point)."""
    meta = run_dir / "run.json"
    if not meta.is_file() and (run_dir / TUNE_MARKER).is_file():
        meta = run_dir / TUNE_MARKER
    if meta.is_file():
        try:
            run_id = json.loads(meta.read_text())["run_id"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ExportError(f"{meta}: unreadable ({_one_line(e, 120)})") from None
        row = store.run(run_id)
        if row is None:
            raise ExportError(f"{run_dir}: its run {run_id} is not in results db {store.path} (use --db)")
        return row
    spec_hash, parent = run_dir.name, run_dir.parent
    if parent.parent.name == "sweeps":
        sql, params = "sweep_id = ? AND spec_hash = ?", [parent.name, spec_hash]
    else:
        sql, params = "sweep_id IS NULL AND spec_hash = ?", [spec_hash]
    found = store._query(
        f"SELECT run_id FROM runs WHERE {sql} ORDER BY started_at DESC NULLS LAST, run_id DESC LIMIT 1", params
    )
    if not found:
        raise ExportError(f"{run_dir}: no run of this checkpoint folder in results db {store.path} (use --db)")
    return store.run(found[0]["run_id"])


def _sweep_trial_dir(runs_dir: Path, row: dict[str, Any]) -> Path:
    """A sweep run's newest checkpoint folder: a Tune checkpoint under <runs-dir>/ray/<name>-<sweep_id>/
    whose marker names this run (the highest epoch), else the older <runs-dir>/sweeps/<sweep_id>/<spec_hash>/."""
    best, best_epoch = None, -1
    for marker in (runs_dir / "ray").glob(f"*{row['sweep_id']}/*/checkpoint_*/{TUNE_MARKER}"):
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("run_id") == row["run_id"] and int(meta.get("epoch") or 0) > best_epoch:
            best, best_epoch = marker.parent, int(meta.get("epoch") or 0)
    return best if best is not None else runs_dir / "sweeps" / row["sweep_id"] / row["spec_hash"]


def resolve_run(ref: str, db_path: Path, runs_dir: Path) -> RunRef:
    """A run id (or unique prefix) from the results db, or a run folder holding checkpoint.pt."""
    from .checkpoint import CHECKPOINT

    path = Path(ref)
    with _open_store(db_path) as store:
        if path.is_dir():
            row = _run_of_dir(store, path)
            run_dir = path
        else:
            row = _run_by_id(store, ref)
            run_dir = _sweep_trial_dir(Path(runs_dir), row) if row["sweep_id"] else Path(runs_dir) / row["spec_hash"]
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_file():
        raise ExportError(f"run {row['run_id']}: no checkpoint at {ckpt} (use --runs-dir for another runs folder)")
    meta = run_dir / "run.json"
    if meta.is_file() and not row["sweep_id"]:
        try:
            owner = json.loads(meta.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            owner = None
        if owner and owner != row["run_id"]:
            raise ExportError(
                f"run {row['run_id']}: the checkpoint at {ckpt} now belongs to run {owner} "
                f"(the same spec was run again)"
            )
    return RunRef(row["run_id"], row, run_dir, ckpt)


# ----------------------------------------------------------------------------- state dicts
def checkpoint_state(path: Path, ref: RunRef | None = None) -> tuple[dict[str, Tensor], int | None]:
    """The model state_dict of a granet training checkpoint, and its epoch.

    Read with weights_only=True (a checkpoint can run no code); one that names another run
    than `ref` is refused."""
    from .checkpoint import CheckpointError, check_owner, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
        if ref is not None:
            check_owner(ckpt, path, ref.run_id, ref.row.get("spec_hash"))
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    return ckpt["model"], ckpt.get("epoch")


def sparse_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous copies; every `<m>.weight` with a `<m>.weight_mask` multiplied by the mask."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        out[key] = value.detach().to("cpu").clone().contiguous()
    for key in [k for k in out if k.endswith(MASK_SUFFIX)]:
        mask = out[key] = out[key].to(torch.bool)
        wkey = key[: -len(MASK_SUFFIX)] + ".weight"
        if wkey in out:
            out[wkey] = (out[wkey] * mask).contiguous()
    return out


def mask_stats(state: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Per masked weight: shape, numel, active (mask count)."""
    stats = {}
    for key, mask in state.items():
        if key.endswith(MASK_SUFFIX):
            stats[key[: -len(MASK_SUFFIX)] + ".weight"] = {
                "shape": list(mask.shape),
                "numel": mask.numel(),
                "active": int(mask.sum()),
            }
    return stats


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sidecar_for(
    ref: RunRef, state: dict[str, Tensor], epoch: int | None, weights: Path | None, fmt: str | None
) -> dict[str, Any]:
    from . import __version__

    row = ref.row
    try:
        spec = json.loads(row["spec_json"]) if row.get("spec_json") else None
    except ValueError:
        spec = None
    if spec is None:
        raise ExportError(f"run {ref.run_id}: the results db holds no readable spec for it (runs.spec_json)")
    stats = mask_stats(state)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "granet_version": __version__,
        "run_id": ref.run_id,
        "sweep_id": row.get("sweep_id"),
        "spec_hash": row.get("spec_hash"),
        "status": row.get("status"),
        "checkpoint_epoch": epoch,
        "weights": weights.name if weights is not None else None,
        "weights_format": fmt,
        "spec": spec,
        "metrics": {k: _jsonable(v) for k, v in row.items() if k != "spec_json"},
        "masks": stats,
        "active_weights": sum(s["active"] for s in stats.values()),
        "masked_weights": sum(s["numel"] for s in stats.values()),
    }


def safetensors_available() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def export_run(ref: RunRef, out: Path | None, fmt: str = "pt") -> tuple[Path, Path, dict[str, Any]]:
    """Write the weights file and its JSON sidecar; returns (weights, sidecar, sidecar dict)."""
    if fmt not in ("pt", "safetensors"):
        raise ExportError(f"--format: expected pt or safetensors, got {fmt!r}")
    if fmt == "safetensors" and not safetensors_available():
        raise ExportError("--format safetensors needs the safetensors package (pip install safetensors)")
    raw, epoch = checkpoint_state(ref.checkpoint, ref)
    state = sparse_state_dict(raw)
    # --out FILE.pt / FILE.safetensors is the file; any other path is a folder to put <run id>.<fmt> in
    weights = Path(out) if out is not None else Path(f"{ref.run_id}.{fmt}")
    if weights.is_dir() or weights.suffix not in (".pt", ".pth", ".safetensors"):
        weights = weights / f"{ref.run_id}.{fmt}"
    sidecar_path = sidecar_of(weights)
    side = sidecar_for(ref, state, epoch, weights, fmt)
    try:
        check_regular(weights, "--out")
        check_regular(sidecar_path, "--out")
        weights.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(weights, "--out") as tmp:
            if fmt == "safetensors":
                from safetensors.torch import save_file

                save_file(state, str(tmp), metadata={"format": FORMAT, "run_id": ref.run_id})
            else:
                torch.save(state, tmp)
        write_text(sidecar_path, json.dumps(side, indent=2, sort_keys=False) + "\n", "--out")
    except PathError as e:
        raise ExportError(str(e)) from None
    except OSError as e:
        why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or _one_line(e, 120))
        raise ExportError(f"--out {weights}: cannot write ({why})") from None
    except RuntimeError as e:  # torch's writer reports a full disk as a RuntimeError
        raise ExportError(f"--out {weights}: cannot write ({_one_line(e, 120)})") from None
    return weights, sidecar_path, side


def sidecar_of(weights: Path) -> Path:
    """`m.pt` -> `m.pt.json`: each weights file its own sidecar (a .pt and a .safetensors export of
    one name in one folder no longer share, and overwrite, one `m.json`)."""
    return weights.with_name(weights.name + ".json")


# ----------------------------------------------------------------------------- loading
@dataclass
class Loaded:
    state: dict[str, Tensor]
    sidecar: dict[str, Any]
    source: str


def load_weights(path: Path) -> dict[str, Tensor]:
    """An exported weights file: safetensors by its suffix, else torch.load(weights_only=True)."""
    from .checkpoint import safe_torch_load, weights_only_reason

    try:
        if path.suffix == ".safetensors":
            if not safetensors_available():
                raise ExportError(
                    f"{path}: reading safetensors needs the safetensors package (pip install safetensors)"
                )
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            if not _looks_like_torch_file(path):
                raise ExportError(f"{path}: not a readable model file (neither a torch zip archive nor a pickle)")
            state = safe_torch_load(path)
    except ExportError:
        raise
    except pickle.UnpicklingError as e:
        raise ExportError(
            f"{path}: refused, it does not load with torch.load(weights_only=True) ({weights_only_reason(e)}); "
            "granet never unpickles code from a model file"
        ) from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise ExportError(f"{path}: not a readable model file ({type(e).__name__}: {_one_line(e, 150)})") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ExportError(f"{path}: not an exported granet model (expected a state_dict of tensors)")
    return state


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        side = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable sidecar ({_one_line(e, 150)})") from None
    if not isinstance(side, dict) or side.get("format") != FORMAT or not isinstance(side.get("spec"), dict):
        raise ExportError(f"{path}: not a granet export sidecar (no format/spec)")
    return side


def load_any(ref: str, db_path: Path, runs_dir: Path) -> Loaded:
    """An exported model (weights file or its .json sidecar), a run folder, or a run id/prefix."""
    path = Path(ref)
    if path.is_file():
        if path.suffix == ".json":
            side = _read_sidecar(path)
            if not side.get("weights"):
                raise ExportError(f"{path}: the sidecar names no weights file")
            weights = path.parent / side["weights"]
        else:
            weights, sidecar = path, sidecar_of(path)
            if not sidecar.is_file() and path.with_suffix(".json").is_file():  # written by granet before 0.2
                sidecar = path.with_suffix(".json")
            if not sidecar.is_file():
                raise ExportError(f"{path}: no sidecar {sidecar.name} next to it (granet export writes both)")
            side = _read_sidecar(sidecar)
        if not weights.is_file():
            raise ExportError(f"{weights}: weights file not found")
        return Loaded(load_weights(weights), side, str(weights))
    if path.suffix in (".pt", ".safetensors", ".json") and not path.exists():
        raise ExportError(f"{path}: file not found")
    run = resolve_run(ref, db_path, runs_dir)
    raw, epoch = checkpoint_state(run.checkpoint, run)
    state = sparse_state_dict(raw)
    return Loaded(state, sidecar_for(run, state, epoch, None, None), str(run.checkpoint))


def run_spec_of(side: dict[str, Any], overrides: list[str] | None = None):
    """The RunSpec in a sidecar, with `--set` overrides applied."""
    import copy

    from .spec import SpecError, apply_overrides, build_run_spec

    try:
        return build_run_spec(apply_overrides(copy.deepcopy(side["spec"]), overrides))
    except SpecError as e:
        raise ExportError("\n".join(e.problems)) from None


def rebuild_model(spec, state: dict[str, Tensor], num_classes: int, input_shape) -> nn.Module:
    """The spec's architecture with the weights and masks of `state` loaded (strict)."""
    from .models import ModelError, build_model

    try:
        model = build_model(spec.model.name, num_classes, tuple(input_shape), fan_in_init=spec.model.fan_in_init)
    except ModelError as e:
        raise ExportError(str(e)) from None
    for key, mask in state.items():
        if key.endswith(MASK_SUFFIX):
            try:
                module = model.get_submodule(key[: -len(MASK_SUFFIX)])
            except AttributeError:
                raise ExportError(f"weights do not fit model {spec.model.name}: no module for {key}") from None
            module.register_buffer("weight_mask", torch.zeros(mask.shape, dtype=torch.bool))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n\t")[0:2]
        raise ExportError(f"weights do not fit model {spec.model.name} ({_one_line(' '.join(first), 200)})") from None
    return model.eval()


def evaluate_loaded(loaded: Loaded, overrides: list[str] | None = None, device: str | None = None) -> dict[str, Any]:
    """Rebuild the model and evaluate it on the spec's test set with the trainer's `evaluate`."""
    from .data import DataError, build_loaders
    from .train import DeviceError, evaluate, pick_device

    spec = run_spec_of(loaded.sidecar, overrides)
    try:
        dev = pick_device(device or spec.device)
    except DeviceError as e:
        raise ExportError(str(e)) from None
    try:
        loaders = build_loaders(**spec.data.model_dump(), seed=spec.seed)
    except DataError as e:
        raise ExportError(str(e)) from None
    model = rebuild_model(spec, loaded.state, loaders.info.num_classes, loaders.info.input_shape).to(dev)
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.optim.label_smoothing)
    loss, acc, acc5 = evaluate(model, loaders.test, dev, criterion, spec.amp)
    return {
        "test_acc": acc,
        "test_loss": loss,
        "test_acc5": acc5,
        "samples": len(cast(Sized, loaders.test.dataset)),
        "dataset": spec.data.name,
        "device": str(dev),
        "source": loaded.source,
        "run_id": loaded.sidecar.get("run_id"),
        "db_final_test_acc": (loaded.sidecar.get("metrics") or {}).get("final_test_acc"),
    }
