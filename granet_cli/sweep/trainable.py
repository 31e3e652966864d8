"""One Ray Tune trial of a sweep, run on whichever node Tune places it: `train.run` of one point, and
the keys of the reports it sends the driver.

Kept apart from the driver's code: this is the code that runs on the workers (Tune ships the
function by reference, `granet_cli.sweep.trainable.trainable`, so its path is part of a sweep).
The trial reports its epochs' rows at most every `REPORT_EVERY_S` seconds, together (and at the
epochs a scheduler decides at, with a checkpoint, and at the end), with a Tune checkpoint (the
trainer's checkpoint.pt plus `MARKER`) at most every `checkpoint_every` seconds; a trial that
continues from a checkpoint first sends the checkpoint's rows in one report (`REPLAY_KEY`), and
granet's own errors end the trial with a final report instead of an exception, so Tune never
retries them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from ..spec import RunSpec

#: result keys of the trainable's reports (JSON strings, decoded by the driver): the epochs since
#: the last report as [row, its mask updates] pairs, oldest first; the trial's outcome
EPOCHS_KEY, FINAL_KEY = "granet_epochs", "granet_final"
#: a trial's epochs reach the driver together, at most this often (besides the epochs its scheduler
#: decides at, its checkpoints and its end): a trial waits for the driver to take each report, and
#: a report per ~80 ms epoch (~10 ms each, the db write included) made a quickstart trial 1.2x
#: slower than the same run alone
REPORT_EVERY_S = 1.0
#: the Ray node id a trial runs on, with each epoch's report
NODE_KEY = "granet_node"
#: the rows a checkpoint holds, sent once by a trial that continues from it
REPLAY_KEY = "granet_replay"
#: the epoch's validation accuracy: the metric `granet tune` searches and stops on (never test_acc)
VAL_KEY = "val_acc"
#: beside checkpoint.pt in every Tune checkpoint: which point, run and epoch it is
MARKER = "granet_checkpoint.json"


def _mark_checkpoint(work: Path, point: dict, row: dict) -> None:
    """The marker beside checkpoint.pt that names the trial's run and epoch (export finds runs by it)."""
    keys = {k: point[k] for k in ("spec_hash", "run_id", "sweep_id")}
    (work / MARKER).write_text(json.dumps({**keys, "epoch": row["epoch"], "step": row["step"]}))


def trainable(config: dict) -> None:
    """One Ray Tune trial: `train.run` of one point in a node-local folder, its epochs reported in
    batches and a Tune checkpoint at most every `checkpoint_every` seconds."""
    import ray
    from ray import tune

    from .. import train

    point = config["point"]
    node_id = ray.get_runtime_context().get_node_id()  # said in words if this node is lost
    spec = RunSpec.model_validate_json(point["spec_json"])
    checkpoint = tune.get_checkpoint()  # set when Tune retries this trial
    if checkpoint is None and point.get("resume_from"):  # left in storage by an earlier invocation
        checkpoint = tune.Checkpoint(point["resume_from"])
    work = Path(tempfile.mkdtemp(prefix="granet-trial-"))
    try:
        replay_to = _restore(checkpoint, work, point["spec_hash"]) if checkpoint is not None else 0
        replay: dict[str, list] = {"epochs": [], "updates": []}
        last_val: dict[str, float | None] = {VAL_KEY: None}  # the final report repeats it (a searcher reads the last)
        every = float(point.get("checkpoint_every") or 0.0)  # seconds; 0: every epoch
        decide_at = set(point.get("report_at") or ())  # epochs a scheduler (ASHA) decides at
        pending: list[list] = []  # [row, updates] of the epochs not yet reported
        last = {"checkpoint": time.monotonic(), "report": time.monotonic()}  # the first ones wait too

        def on_epoch(row: dict, updates: list[dict]) -> None:
            if row["epoch"] <= replay_to:  # rows the checkpoint holds: sent once, together
                replay["epochs"].append(row)
                replay["updates"].extend(updates)
                if row["epoch"] == replay_to:
                    tune.report({REPLAY_KEY: json.dumps(replay), "epoch": replay_to})
                return
            last_val[VAL_KEY] = row.get("val_acc")
            pending.append([row, updates])
            now = time.monotonic()
            # a Tune checkpoint at most every `every` seconds, and at the last epoch: a lost node costs
            # at most that much work, and short trials are not dominated by checkpoint copies
            save = row["epoch"] >= spec.optim.epochs or now - last["checkpoint"] >= every
            if not (save or row["epoch"] in decide_at or now - last["report"] >= REPORT_EVERY_S):
                return
            report = {
                EPOCHS_KEY: json.dumps(pending),
                "epoch": row["epoch"],
                "test_acc": row["test_acc"],
                VAL_KEY: row.get("val_acc"),
                NODE_KEY: node_id,
            }
            pending.clear()
            last["report"] = now
            if not save:
                tune.report(report)
                return
            last["checkpoint"] = now
            _mark_checkpoint(work, point, row)  # train.run has just written work/checkpoint.pt for this epoch
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(work)))

        def unsent() -> dict[str, str]:
            """The epochs not yet reported, for the final report (a run that diverged or failed)."""
            return {EPOCHS_KEY: json.dumps(pending)} if pending else {}

        try:
            result = train.run(spec, work, resume=replay_to > 0, on_epoch=on_epoch, threads=point["threads"])
        except Exception as e:
            # the checkpoint did not load: no epoch of it came back
            not_loaded = checkpoint.path if replay_to and not replay["epochs"] and checkpoint is not None else None
            error = _deterministic_error(e, not_loaded)
            if error is None:  # a crash Tune retries (FailureConfig), from the trial's last checkpoint
                raise
            # deterministic (the input, or the same checkpoint on every attempt): the trial ends
            # failed with its error, and Tune, which saw no exception, does not retry it
            tune.report({**unsent(), FINAL_KEY: json.dumps({"status": "failed", "error": error})})
            return
        tune.report(
            {
                **unsent(),
                FINAL_KEY: json.dumps(
                    {"status": result.status, "error": result.error, "final": result.final, "layers": result.layers}
                ),
                "final_test_acc": result.final.get("final_test_acc"),
                "run_status": result.status,
                **last_val,
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _restore(checkpoint, work: Path, spec_hash: str) -> int:
    """The checkpoint copied into `work`; its epoch (RuntimeError if it is another point's)."""
    checkpoint.to_directory(str(work))
    meta = json.loads((work / MARKER).read_text())
    if meta.get("spec_hash") != spec_hash:
        raise RuntimeError(f"checkpoint {checkpoint.path} belongs to spec {meta.get('spec_hash')}, not {spec_hash}")
    return int(meta["epoch"])


def _deterministic_error(e: Exception, not_loaded: str | None) -> str | None:
    """The line of an error that would recur on every attempt (granet's own, or a checkpoint
    `not_loaded` that would fail the same way again), else None: a crash Tune may retry."""
    from .. import train
    from ..data import DataError
    from ..models import ModelError
    from .preflight import one_line, own_errors

    set_up = (DataError, ModelError, train.DeviceError)  # not the checkpoint's fault
    if not_loaded is not None and not isinstance(e, set_up):
        return (
            f"continuing from checkpoint {not_loaded} failed ({type(e).__name__}: {one_line(e)[:200]}); "
            "delete that checkpoint folder to let the point start over"
        )
    if isinstance(e, own_errors()):
        return f"{type(e).__name__}: {one_line(e)}"
    return None
