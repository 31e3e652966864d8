"""`granet sweep --wandb PROJECT / --mlflow URI`: Ray Tune's own logger callbacks
(ray.air.integrations.wandb.WandbLoggerCallback, ray.air.integrations.mlflow.MLflowLoggerCallback),
fed granet's metrics under the tags of `columns.EPOCH_TAGS`. Nothing here imports ray, wandb or
mlflow before a sweep starts. Optional extras: ``granet-cli[wandb]``, ``granet-cli[mlflow]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..report.grouping import flatten
from ..trackers import EPOCH_TAGS, TrackerError

WANDB_INSTALL = "pip install wandb, or pip install 'granet-cli[wandb]'"
MLFLOW_INSTALL = "pip install mlflow-skinny, or pip install 'granet-cli[mlflow]'"


def require_wandb() -> None:
    """The wandb package, and a way to log: an API key (`wandb login`, $WANDB_API_KEY) unless
    $WANDB_MODE is offline or disabled. Reads no network."""
    try:
        import wandb
    except ImportError:
        raise TrackerError(f"--wandb needs the wandb package, which is not installed ({WANDB_INSTALL})") from None
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_SETUP_API_KEY_HOOK"):
        return
    try:  # credentials `wandb login` left (~/.netrc, W&B's settings), not verified: no network
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            logged_in = wandb.login(prompt=False, verify=False)
    except Exception:  # noqa: BLE001 - a wandb version that cannot tell: W&B itself will say
        return
    if not logged_in:
        raise TrackerError(
            "--wandb: not logged in to W&B (run `wandb login` or set WANDB_API_KEY; "
            "or WANDB_MODE=offline to log locally and `wandb sync` later)"
        )


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackerError(f"--mlflow needs the mlflow package, which is not installed ({MLFLOW_INSTALL})") from None


def mlflow_tracking_uri(value: str | Path) -> str:
    """--mlflow's value as an MLflow tracking URI: a URI (http://host:5000, sqlite:///mlflow.db,
    file:///abs/dir, databricks) as is; anything else is a local folder, as an absolute file: URI."""
    text = str(value)
    if text == "databricks" or re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", text):
        return text
    return Path(text).expanduser().resolve().as_uri()


def local_mlflow_folder(uri: str) -> Path | None:
    """The folder of a file: tracking URI (None for a server or a database)."""
    if not uri.startswith("file:"):
        return None
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))


def trial_params(point: dict[str, Any], sweep: str | None) -> dict[str, Any]:
    """What a tracker records of a trial (`trial.config["point"]` of granet's trainable): the
    `runs` row's keys (run id, spec hash, method, target density, seed, ...) and the whole spec."""
    spec = json.loads(point.get("spec_json") or "{}")
    sparsity, model, data, optim = (spec.get(k) or {} for k in ("sparsity", "model", "data", "optim"))
    return {
        "run_id": point.get("run_id"),
        "sweep": sweep,
        "sweep_id": point.get("sweep_id"),
        "trial_name": point.get("name"),
        "spec_hash": point.get("spec_hash"),
        "method": sparsity.get("method"),
        "density": sparsity.get("final_density"),
        "seed": spec.get("seed"),
        "model": model.get("name"),
        "dataset": data.get("name"),
        "epochs": optim.get("epochs"),
        "spec": spec,
    }


def run_name(point: dict[str, Any]) -> str:
    """`<trial name>-<run id>`, e.g. granet_d0.1_s0-1a2b3c4d-5e6f7a8b: the run id is runs.run_id in the db."""
    return f"{point.get('name')}-{point.get('run_id')}"


def tracker_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A Tune result of granet's trainable as tracker metrics: one dict per epoch it carries (the `epochs`
    row's values under the TensorBoard tags, plus "epoch"), and the run's final metrics as
    final/<name> (final/test_acc, final/best_test_acc, final/achieved_density, ...) with the last epoch."""
    from .trainable import EPOCHS_KEY, FINAL_KEY, REPLAY_KEY

    rows: list[dict[str, Any]] = []
    epochs = list(json.loads(result[REPLAY_KEY])["epochs"]) if REPLAY_KEY in result else []
    if EPOCHS_KEY in result:
        epochs.extend(row for row, _updates in json.loads(result[EPOCHS_KEY]))
    for row in epochs:
        metrics: dict[str, Any] = {"epoch": int(row["epoch"])}
        metrics.update({tag: float(row[k]) for k, tag in EPOCH_TAGS.items() if row.get(k) is not None})
        rows.append(metrics)
    if FINAL_KEY in result:
        done = json.loads(result[FINAL_KEY])
        final = {
            f"final/{k.removeprefix('final_')}": float(v)
            for k, v in (done.get("final") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        rows.append({"epoch": None, "status": done.get("status"), **final})
    return rows


def fresh_rows(result: dict[str, Any], last: int) -> tuple[list[tuple[int | None, int, dict, Any]], int]:
    """The rows of a Tune result a tracker has not logged yet, as (epoch, step, metrics, status), and
    the new last epoch: an epoch is logged once (a retried trial sends its checkpoint's again), and
    the final metrics (epoch None) go at the last epoch's step."""
    out = []
    for row in tracker_rows(result):
        epoch = row.pop("epoch")
        if epoch is not None and epoch <= last:
            continue
        last = epoch if epoch is not None else last
        out.append((epoch, last, row, row.pop("status", None)))
    return out, last


@dataclass(frozen=True)
class RayTrackers:
    """`granet sweep --wandb / --mlflow`: the settings of the Tune logger callbacks to add.

    wandb_project: W&B project (entity: $WANDB_ENTITY or the login's default; $WANDB_MODE=offline
    logs to <wandb_dir>/wandb/offline-run-*/ for a later `wandb sync`). mlflow_uri: an MLflow
    tracking URI (see `mlflow_tracking_uri`). group: the sweep's name, W&B's run group and the
    default MLflow experiment."""

    wandb_project: str | None = None
    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None
    group: str | None = None
    wandb_dir: str | None = None

    def __bool__(self) -> bool:
        return bool(self.wandb_project or self.mlflow_uri)

    def callbacks(self) -> list[Any]:
        return ray_tracker_callbacks(self)


def ray_tracker_callbacks(trackers: RayTrackers) -> list[Any]:
    """Ray Tune's WandbLoggerCallback / MLflowLoggerCallback (imported here, when a sweep starts),
    each fed granet's per-epoch and final metrics (`tracker_rows`) and each trial's parameters
    (`trial_params`), named `run_name` so that a tracker's run matches its `runs` row."""
    out: list[Any] = []
    if trackers.wandb_project:
        out.append(_wandb_callback(trackers))
    if trackers.mlflow_uri:
        out.append(_mlflow_callback(trackers))
    return out


def _point(trial: Any) -> dict[str, Any]:
    return dict((getattr(trial, "config", None) or {}).get("point") or {})


def _wandb_callback(trackers: RayTrackers) -> Any:
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class FlushingLoggingActor(_WandbLoggingActor):
        """Ray's W&B logging actor, which also waits for wandb-core to write the run out before it
        returns: Ray kills the actor as soon as `run` returns, and `wandb.finish()` alone may leave
        the last records (or, offline, the whole history) unwritten when the process dies."""

        def run(self) -> None:
            super().run()
            self._wandb.teardown()

    mode = os.environ.get("WANDB_MODE")  # the logging actors may run where the driver's env is not
    wandb_dir = trackers.wandb_dir or os.environ.get("WANDB_DIR") or os.getcwd()
    wandb_dir = str(Path(wandb_dir).expanduser().resolve())

    class GranetWandbCallback(WandbLoggerCallback):
        """One W&B run per trial: name `run_name`, group the sweep, config `trial_params`; logs
        every epoch (step = epoch) once, and final/* with the last epoch."""

        _logger_actor_cls = FlushingLoggingActor

        def setup(self, *args: Any, **kwargs: Any) -> None:
            super().setup(*args, **kwargs)
            Path(wandb_dir).mkdir(parents=True, exist_ok=True)
            self._granet_last: dict[str, int] = {}

        def _start_logging_actor(self, trial: Any, exclude_results: list[str], **init: Any) -> None:
            point = _point(trial)
            init.update(
                name=run_name(point),
                group=trackers.group or init.get("group"),
                config=trial_params(point, trackers.group),
                dir=wandb_dir,
                **({"mode": mode} if mode else {}),
            )
            super()._start_logging_actor(trial, exclude_results, **init)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            rows, self._granet_last[trial.trial_id] = fresh_rows(result, self._granet_last.get(trial.trial_id, 0))
            for _epoch, step, row, status in rows:
                if status is not None:
                    row["config"] = {"status": status}
                step = max(step, 1)
                super().log_trial_result(iteration, trial, {**row, "epoch": step, "training_iteration": step})

    return GranetWandbCallback(project=trackers.wandb_project, group=trackers.group)


def _mlflow_callback(trackers: RayTrackers) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = str(trackers.mlflow_uri)

    class GranetMLflowCallback(MLflowLoggerCallback):
        """One MLflow run per trial in the experiment: name `run_name`, params `trial_params`
        (the spec flattened as spec.<field>), tags granet.run_id / granet.status; every epoch
        once as metrics at step = epoch, final/* at the last epoch."""

        def setup(self, *args: Any, **kwargs: Any) -> None:
            if local_mlflow_folder(uri) is not None:
                # MLflow 3 keeps its file store in maintenance mode: it asks for this opt-in
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            super().setup(*args, **kwargs)
            from mlflow.tracking import MlflowClient

            self._granet_client = MlflowClient(tracking_uri=uri)
            self._granet_last: dict[str, int] = {}

        def log_trial_start(self, trial: Any) -> None:
            if trial in self._trial_runs:
                return
            from mlflow.entities import Param

            point = _point(trial)
            params = trial_params(point, trackers.group)
            tags = {
                **(self.tags or {}),
                "trial_name": str(trial),
                "granet.run_id": str(point.get("run_id")),
                "granet.sweep": str(trackers.group),
            }
            run = self.mlflow_util.start_run(tags=tags, run_name=run_name(point))
            self._trial_runs[trial] = run.info.run_id
            flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
            for i in range(0, len(flat), 100):  # MLflow takes at most 100 params a batch
                self._granet_client.log_batch(run.info.run_id, params=flat[i : i + 100])

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            from mlflow.entities import Metric

            if trial not in self._trial_runs:
                self.log_trial_start(trial)
            run_id = self._trial_runs[trial]
            now = int(time.time() * 1000)
            rows, self._granet_last[trial.trial_id] = fresh_rows(result, self._granet_last.get(trial.trial_id, 0))
            for epoch, step, row, status in rows:
                if status is not None:
                    self._granet_client.set_tag(run_id, "granet.status", str(status))
                metrics = [Metric(k, v, now, step) for k, v in row.items()]
                if epoch is not None:
                    metrics.append(Metric("epoch", float(epoch), now, step))
                self._granet_client.log_batch(run_id, metrics=metrics)

    return GranetMLflowCallback(
        tracking_uri=uri, experiment_name=trackers.mlflow_experiment or trackers.group or "granet"
    )
