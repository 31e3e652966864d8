"""The Ray Tune backend of `granet sweep`: trials, checkpoints in storage, retries, the driver's db writes.

Each grid point is one Ray Tune trial running the same `train.run` as `granet run`, in a
node-local temporary folder. After every epoch the trial reports the epoch's row and a Tune
checkpoint (that folder: the trainer's checkpoint.pt with model, optimizer, masks, sparse-core
state and RNG, plus a small `granet_checkpoint.json`) through `tune.report`; Tune copies it to
`RunConfig.storage_path` (local, NFS or a cloud URI) and keeps the last two per trial.

Fault tolerance is Tune's own: `FailureConfig(max_failures)` restarts a trial whose node
died (or that crashed) on any live node, and the restarted trial continues from
`tune.get_checkpoint()`. A rerun of an interrupted sweep (driver killed) is a new Tuner: the
driver finds each unfinished point's latest checkpoint in storage and hands it to the trial,
which continues from it the same way (see `find_checkpoints`).

Only the driver writes the results db (a `ray.tune.Callback`). A trial that continues from a
checkpoint first sends the checkpoint's epoch rows and mask updates in one report; the driver
replaces the run's rows with them (`Store.truncate_after`), so rows are never duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .ray_local import LocalRay
from .recorder import RunRecorder
from .spec import RunSpec
from .sweep_plan import (
    DONE_STATUSES,
    INTERRUPTED,
    SweepError,
    SweepOutcome,
    SweepPlan,
    TrialOutcome,
    _slug,
    pick,
    read_state,
)
from .sweep_view import _Display

#: where a cluster keeps Ray's logs (said when a trial of a sweep on it failed or was retried)
_CLUSTER_LOGS = (
    "Ray's logs: on each node of the cluster, in <temp dir>/session_latest/logs (the temp dir is "
    "/tmp/ray unless `ray start --temp-dir` said otherwise); raylet.out there says why a node went away"
)

#: result keys of the trainable's reports (JSON strings, decoded by the driver)
EPOCH_KEY, UPDATES_KEY, FINAL_KEY = "granet_epoch", "granet_mask_updates", "granet_final"
#: the Ray node id a trial runs on, with each epoch's report
NODE_KEY = "granet_node"
#: a retry that has not started after this many seconds is said to wait for resources
WAIT_NOTE_S = 5.0
#: the rows a checkpoint holds, sent once by a trial that continues from it
REPLAY_KEY = "granet_replay"
#: beside checkpoint.pt in every Tune checkpoint: which point, run and epoch it is
MARKER = "granet_checkpoint.json"
#: Tune checkpoints kept per trial in storage (the newest ones)
CHECKPOINTS_KEPT = 2


# ----------------------------------------------------------------------------- storage
def storage_root(storage_path: str | os.PathLike) -> str:
    """A URI (s3://, gs://, ...) as is; a local or NFS path made absolute (trials run elsewhere)."""
    text = str(storage_path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def experiment_name(plan: SweepPlan) -> str:
    """One Tune experiment folder per sweep under the storage path, the same on every rerun."""
    return f"{_slug(plan.name)[:40]}-{plan.sweep_id}"


def _filesystem(storage: str):
    import pyarrow.fs as pafs

    if "://" in storage:
        return pafs.FileSystem.from_uri(storage)
    return pafs.LocalFileSystem(), storage


def find_checkpoints(storage: str, experiment: str) -> dict[str, dict]:
    """spec_hash -> the newest checkpoint (highest epoch) any earlier trial of this sweep left in
    storage: {"path": local path or URI, "epoch", "step", "run_id", "spec_hash"}.

    The layout is Tune's: <storage>/<experiment>/<trial>/checkpoint_NNNNNN/, each with our marker."""
    import pyarrow.fs as pafs

    try:
        fs, root = _filesystem(storage)
        base = f"{root.rstrip('/')}/{experiment}"
        trials = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except (OSError, ValueError):  # pyarrow's errors are OSError subclasses
        return {}
    best: dict[str, dict] = {}
    for trial in trials:
        if trial.type != pafs.FileType.Directory:
            continue
        try:
            entries = fs.get_file_info(pafs.FileSelector(trial.path, allow_not_found=True))
        except OSError:
            continue
        for ck in entries:
            if ck.type != pafs.FileType.Directory or not ck.base_name.startswith("checkpoint_"):
                continue
            try:
                with fs.open_input_stream(f"{ck.path}/{MARKER}") as f:
                    meta = json.loads(f.readall().decode())
            except (OSError, ValueError):
                continue  # a checkpoint being written, or not ours
            if not isinstance(meta, dict) or "spec_hash" not in meta or "epoch" not in meta:
                continue
            cur = best.get(meta["spec_hash"])
            if cur is None or meta["epoch"] > cur["epoch"]:
                rel = ck.path[len(root.rstrip("/")) :].lstrip("/")
                best[meta["spec_hash"]] = {**meta, "path": f"{storage.rstrip('/')}/{rel}"}
    return best


# ----------------------------------------------------------------------------- the trial
def _trainable(config: dict) -> None:
    """One Ray Tune trial: `train.run` of one point in a node-local folder, a Tune checkpoint every epoch."""
    import ray
    from ray import tune

    from . import train
    from .data import DataError
    from .models import ModelError
    from .preflight import one_line, own_errors

    point = config["point"]
    node_id = ray.get_runtime_context().get_node_id()  # said in words if this node is lost
    spec = RunSpec.model_validate_json(point["spec_json"])
    checkpoint = tune.get_checkpoint()  # set when Tune retries this trial
    if checkpoint is None and point.get("resume_from"):  # left in storage by an earlier invocation
        checkpoint = tune.Checkpoint(point["resume_from"])
    work = Path(tempfile.mkdtemp(prefix="granet-trial-"))
    try:
        replay_to = 0
        if checkpoint is not None:
            checkpoint.to_directory(str(work))
            meta = json.loads((work / MARKER).read_text())
            if meta.get("spec_hash") != point["spec_hash"]:
                raise RuntimeError(
                    f"checkpoint {checkpoint.path} belongs to spec {meta.get('spec_hash')}, not {point['spec_hash']}"
                )
            replay_to = int(meta["epoch"])
        replay: dict[str, list] = {"epochs": [], "updates": []}

        def on_epoch(row: dict, updates: list[dict]) -> None:
            if row["epoch"] <= replay_to:  # rows the checkpoint holds: sent once, together
                replay["epochs"].append(row)
                replay["updates"].extend(updates)
                if row["epoch"] == replay_to:
                    tune.report({REPLAY_KEY: json.dumps(replay), "epoch": replay_to})
                return
            # train.run has just written work/checkpoint.pt for this epoch
            (work / MARKER).write_text(
                json.dumps(
                    {
                        "spec_hash": point["spec_hash"],
                        "run_id": point["run_id"],
                        "sweep_id": point["sweep_id"],
                        "epoch": row["epoch"],
                        "step": row["step"],
                    }
                )
            )
            tune.report(
                {
                    EPOCH_KEY: json.dumps(row),
                    UPDATES_KEY: json.dumps(updates),
                    "epoch": row["epoch"],
                    "test_acc": row["test_acc"],
                    NODE_KEY: node_id,
                },
                checkpoint=tune.Checkpoint.from_directory(str(work)),
            )

        try:
            result = train.run(spec, work, resume=replay_to > 0, on_epoch=on_epoch, threads=point["threads"])
        except Exception as e:
            set_up = (DataError, ModelError, train.DeviceError)  # not the checkpoint's fault
            if replay_to and not replay["epochs"] and not isinstance(e, set_up):  # the checkpoint did not load
                error = (
                    f"continuing from checkpoint {checkpoint.path} failed ({type(e).__name__}: {one_line(e)[:200]}); "
                    "delete that checkpoint folder to let the point start over"
                )
            elif isinstance(e, own_errors()):
                error = f"{type(e).__name__}: {one_line(e)}"
            else:  # a crash Tune retries (FailureConfig), from the trial's last checkpoint
                raise
            # deterministic (the input, or the same checkpoint on every attempt): the trial ends
            # failed with its error, and Tune, which saw no exception, does not retry it
            tune.report({FINAL_KEY: json.dumps({"status": "failed", "error": error})})
            return
        tune.report(
            {
                FINAL_KEY: json.dumps(
                    {"status": result.status, "error": result.error, "final": result.final, "layers": result.layers}
                ),
                "final_test_acc": result.final.get("final_test_acc"),
                "run_status": result.status,
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- errors in words
def _error_line(trial: Any) -> str:
    """The last line of the trial's error.txt (`ValueError: ...`), else the error's repr."""
    path = getattr(trial, "error_file", None)
    try:
        if path and Path(path).is_file():
            lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
            if lines:
                return lines[-1][:500]
    except OSError:
        pass
    err = trial.get_error() if hasattr(trial, "get_error") else None
    return f"{type(err).__name__}: {err}"[:500] if err is not None else "trial failed (no error recorded)"


def _last_error(trial: Any) -> BaseException | None:
    """The trial's latest error as an object (Tune pickles Ray's task and actor errors)."""
    path = getattr(trial, "pickled_error_file", None)
    if not path or not Path(path).is_file():
        return None
    try:
        import ray.cloudpickle

        with open(path, "rb") as f:
            return ray.cloudpickle.load(f)
    except Exception:
        return None


def _latest_failure(trial: Any) -> str:
    """The text of the last failure Tune appended to the trial's error.txt."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text(errors="replace") if path and Path(path).is_file() else ""
    except OSError:
        return ""
    return re.split(r"^Failure # \d+.*$", text, flags=re.M)[-1]


def failure_reason(trial: Any, t: TrialOutcome) -> str:
    """One line for a trial's latest failure: a lost node in words, else the error's last line."""
    from ray.exceptions import RayActorError

    err = _last_error(trial)
    text = " ".join((str(err) if err is not None else _latest_failure(trial)).split())
    during = f"during epoch {t.last_epoch + 1}"
    if isinstance(err, RayActorError) or "The actor died" in text or "ActorDiedError" in text:
        node = _node_name(text) or _node_label(t.node_id) or t.node_ip or getattr(trial, "node_ip", None) or "?"
        if getattr(err, "preempted", False):
            return f"node {node} preempted {during}"
        if re.search(r"node (has )?died|node .*dead|raylet .*died|node was (terminated|killed)", text, re.I):
            return f"node {node} lost {during}"
        if t.node_id and _node_gone(t.node_id):  # Ray's health checks have not noticed yet (~30 s by default)
            return f"node {node} lost {during} (its raylet does not answer)"
        return f"the trial's process on node {node} died {during} ({_first_sentence(text)})"
    where = f" on node {t.node_ip}" if t.node_ip else ""
    return f"{_error_line(trial)} ({during}{where})"


def _first_sentence(text: str, limit: int = 300) -> str:
    """The error's first sentence, whole words only (Ray's actor errors run to many lines)."""
    text = text.split(". ")[0].strip() or "no detail"
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _node_info(node_id: str | None) -> dict | None:
    if not node_id:
        return None
    try:
        import ray

        return next((n for n in ray.nodes() if n.get("NodeID") == node_id), None)
    except Exception:  # noqa: BLE001 - no GCS to ask: the node is named by its ip
        return None


def _node_label(node_id: str | None) -> str | None:
    """`127.0.0.1 (da8e80d7)`: the node's address and the start of its id."""
    n = _node_info(node_id)
    return f"{n.get('NodeManagerAddress', '?')} ({node_id[:8]})" if n and node_id else None


def _node_gone(node_id: str) -> bool:
    """The node is dead to Ray, or its raylet refuses (or does not take) a connection: with Ray's
    default health checks the GCS marks a node dead only ~30 s after it went, long after the
    trial's actor failed, so the raylet's port is asked directly (one connect, 2 s at most)."""
    import socket

    n = _node_info(node_id)
    if n is None or not n.get("Alive", False):
        return n is not None
    try:
        with socket.create_connection((n["NodeManagerAddress"], int(n["NodeManagerPort"])), timeout=2):
            return False
    except (OSError, KeyError, ValueError):
        return True


def _node_name(error_text: str) -> str | None:
    """`127.0.0.1 (da8e80d7)`: the address Ray knows the node by, from the `Node Id:` of an
    actor error, else the `ip:` the error names."""
    m = re.search(r"Node Id: ([0-9a-f]{8,})", error_text)
    if m:
        try:
            import ray

            for n in ray.nodes():
                if n.get("NodeID") == m.group(1):
                    return f"{n.get('NodeManagerAddress', '?')} ({m.group(1)[:8]})"
        except Exception:
            pass
    m = re.search(r"\bip: (\S+)", error_text)
    return m.group(1) if m else None


#: Ray's own driver-side messages that a lost node triggers, said in words by the sweep instead
_RAY_NOISE = ("Raylet is terminated", "has been marked dead because the detector")


@contextmanager
def _quiet_ray_errors() -> Iterator[None]:
    """Ray prints every cluster error message (with raylet log dumps) on the driver; during a
    sweep a lost node is reported by the sweep itself, and other messages keep their first line."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # pragma: no cover - Ray internals moved: nothing filtered
        yield
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:  # pragma: no cover
        yield
        return

    def filtered(data, ignore_prefix):
        if data.get("pid") == "raylet":
            lines = [ln for ln in data.get("lines", []) if not any(n in ln for n in _RAY_NOISE)]
            lines = [ln.strip().splitlines()[0][:300] for ln in lines if ln.strip()]
            if not lines:
                return
            data = {**data, "lines": lines}
        return original(data, ignore_prefix)

    ray_worker.print_to_stdstream = filtered
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


# ----------------------------------------------------------------------------- Ray
def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _init_ray(address: str | None) -> tuple[bool, LocalRay | None]:
    """Join `address` / $RAY_ADDRESS, else start a local instance on all CPUs, watched so that
    nothing of it outlives this process (`ray_local`). (True if we started it, its watchdog)."""
    import ray

    if ray.is_initialized():
        return False, None
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False)
    if address:
        _check_token(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:  # "local": never silently join a cluster some earlier `ray start` left running
            ray.init(address="local", num_cpus=_local_cpus(), include_dashboard=False, **quiet)
    except Exception as e:  # ConnectionError, RuntimeError, ...
        msg = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        if not address:
            raise SweepError(f"could not start a local Ray instance: {msg}") from None
        raise SweepError(
            f"could not join the Ray cluster at {address}: {msg} (is it running? a cluster with "
            "token authentication also needs RAY_AUTH_MODE=token and its token in $RAY_AUTH_TOKEN "
            "or ~/.ray/auth_token)"
        ) from None
    return True, (None if address else LocalRay.watch())


def _check_token(address: str) -> None:
    """SweepError at once if the cluster's GCS refuses our auth token: `ray.init` would log the
    refusal (gcs_client.cc) once a second for ~20 s before giving up. One RPC, as Ray makes it."""
    if not re.fullmatch(r"[\w.\-]+:\d+", address):  # `auto`, ray://...: left to ray.init
        return
    try:
        import grpc
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            SyncAuthenticationMetadataClientInterceptor,
        )
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover - Ray internals moved: ray.init says it, slowly
        return
    channel = grpc.intercept_channel(grpc.insecure_channel(address), SyncAuthenticationMetadataClientInterceptor())
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=10)  # type: ignore[attr-defined]
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            return  # not reachable, ...: ray.init's own error
        sent = (
            "the token sent is not the cluster's"
            if os.environ.get("RAY_AUTH_MODE") == "token"
            else "no token was sent (RAY_AUTH_MODE is not token)"
        )
        raise SweepError(
            f"could not join the Ray cluster at {address}: it refused the connection, {sent}; a cluster "
            "with token authentication needs RAY_AUTH_MODE=token and its token in $RAY_AUTH_TOKEN or "
            "~/.ray/auth_token"
        ) from None
    finally:
        channel.close()


def _stop_ray(local: LocalRay | None, outcome: SweepOutcome | None, runs_dir: Path) -> None:
    """Stop the instance we started and remove its session folder; when a trial failed or was
    retried, keep Ray's logs under <runs-dir>/ray-logs/ (a cluster keeps them on its nodes), said in the summary."""
    import ray

    ray.shutdown()
    troubled = outcome is not None and (outcome.retries > 0 or outcome.count("failed") > 0)
    if local is None:  # joined a cluster: its nodes keep their logs
        if troubled and outcome is not None:
            outcome.ray_logs = _CLUSTER_LOGS
        return
    kept = local.close(Path(runs_dir) / "ray-logs" if troubled else None)
    if kept is not None and outcome is not None:
        outcome.ray_logs = f"Ray's logs of this sweep: {kept}"


def check_feasible(nodes: list[dict], cpus: float, gpus: float) -> None:
    """SweepError unless one alive node alone has `cpus` CPUs and `gpus` GPUs: a trial never
    spans nodes, so the cluster total does not count (two 1-CPU nodes cannot run a 2-CPU trial)."""
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    res = [(n.get("NodeManagerAddress", "?"), n.get("Resources") or {}) for n in alive]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for _, r in res):
        return
    if not res:
        raise SweepError("the Ray cluster has no alive node")
    ip, r = max(
        res,
        key=lambda x: (
            (x[1].get("GPU", 0), x[1].get("CPU", 0)) if gpus > 0 else (x[1].get("CPU", 0), x[1].get("GPU", 0))
        ),
    )
    total_cpu = sum(x[1].get("CPU", 0) for x in res)
    total_gpu = sum(x[1].get("GPU", 0) for x in res)
    raise SweepError(
        f"--cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g}: no node of the Ray cluster can run one "
        f"trial; the largest node ({ip}) has {r.get('CPU', 0):g} CPUs and {r.get('GPU', 0):g} GPUs "
        f"({len(res)} node(s), {total_cpu:g} CPUs and {total_gpu:g} GPUs in all; a trial runs on one node)"
    )


def _check_before_writing(plan: SweepPlan, points: list) -> tuple[dict, float, float]:
    """The cluster's resources and a trial's (cpus, gpus), after refusing (SweepError, one line per
    distinct problem) a sweep no node can run, or whose points `granet run` would refuse: the
    run's set-up checks (preflight) run once per distinct configuration, as a task with a trial's
    resources, so they see what a trial sees (its node's data folder and devices)."""
    import ray

    from . import preflight

    resources = ray.cluster_resources()
    grid = plan.grid
    cpus = grid.cpus_per_trial if grid.cpus_per_trial is not None else 1.0
    gpus = grid.gpus_per_trial if grid.gpus_per_trial is not None else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
    check_feasible(ray.nodes(), cpus, gpus)
    check: Any = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1, max_retries=3)(preflight.problems)
    problems = ray.get(check.remote(preflight.distinct(points, plan.run_spec), max(1, int(cpus))))
    if problems:
        raise SweepError("\n".join(problems))
    return resources, cpus, gpus


# ----------------------------------------------------------------------------- the driver's db writes
class _StoreCallbackHooks:
    """The hooks of the driver-side ray.tune.Callback that writes every trial to the results db
    through its `RunRecorder` (and, with `tensorboard`, each trial's epochs to
    `<tensorboard>/<run id>/`). A plain class, so that this module imports no Ray: `_make_callback`
    puts it in front of `tune.Callback` when a sweep starts.

    Its state lives on the instance (never in closures), and is left out when Tune pickles its
    RunConfig: the db handle and the display stay in this process."""

    def __init__(self, store, plan, by_run, display, max_failures, outcome, tensorboard) -> None:
        self.store, self.plan, self.by_run, self.display = store, plan, by_run, display
        self.max_failures, self.outcome = max_failures, outcome
        self.tensorboard = tensorboard
        self.recorders: dict[str | None, RunRecorder] = {}  # run_id -> the run's recorder

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.store = self.plan = self.display = self.outcome = self.tensorboard = None
        self.by_run, self.max_failures, self.recorders = {}, 0, {}

    def _recorder(self, t: TrialOutcome) -> RunRecorder:
        """The trial's run, recorded as `granet run` records one (the sweep's store stays open)."""
        rec = self.recorders.get(t.run_id)
        if rec is None:
            assert t.run_id is not None  # every trial to run is given its run id when it is planned
            trackers = []
            if self.tensorboard is not None:
                from .trackers import TensorBoardLogger

                hparams = {"label": t.point.label, "spec_hash": t.point.spec_hash}
                trackers.append(TensorBoardLogger(self.tensorboard, t.run_id, hparams))
            rec = RunRecorder(t.point.spec, t.run_id, sweep_id=self.plan.sweep_id, store=self.store, trackers=trackers)
            self.recorders[t.run_id] = rec
        return rec

    def _start_attempt(self, t: TrialOutcome) -> None:
        """(Re)register the run as running with its attempt count (runs.attempts): the first attempt
        of this invocation and every Tune retry; a run continued from an earlier invocation adds up."""
        self._recorder(t).start(attempts=t.prior_attempts + t.attempts)

    def _outcome(self, trial) -> TrialOutcome | None:
        return self.by_run.get(trial.config.get("point", {}).get("run_id"))

    def _start(self, t: TrialOutcome) -> None:
        t.status, t.ran, t.attempts = "running", True, 1
        self._start_attempt(t)
        self.display.started()
        if t.resume_from:
            self.display.note(
                f"[cyan]>>[/cyan] {t.point.label}: resuming from epoch {t.resume_epoch} (its checkpoint in storage)"
            )

    def _fail(self, t: TrialOutcome, error: str) -> None:
        t.status, t.error = "failed", error
        why = self._recorder(t).stop("failed", error)
        if why:
            self.display.note(f"[red]x[/red] {t.point.label}: {why.lstrip('; ')}")
        self.display.finished(t)

    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._outcome(trial)
        if t is not None and t.status == "pending":
            self._start(t)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        t = self._outcome(trial)
        if t is None or t.status != "running":
            return
        t.node_ip = result.get("node_ip") or t.node_ip
        t.node_id = result.get(NODE_KEY) or t.node_id
        t.waiting_since = None
        if REPLAY_KEY in result:  # a continued trial: its checkpoint's rows replace the run's rows
            replay = json.loads(result[REPLAY_KEY])
            self._recorder(t).replay(replay["epochs"], replay["updates"])
            t.last_epoch = replay["epochs"][-1]["epoch"] if replay["epochs"] else 0
            if t.fresh_attempt:
                self.display.note(
                    f"[cyan]>>[/cyan] {t.point.label}: attempt {t.attempts} continues from its "
                    f"epoch-{t.last_epoch} checkpoint"
                )
            t.fresh_attempt = False
        if EPOCH_KEY in result:
            row = json.loads(result[EPOCH_KEY])
            if t.fresh_attempt:  # a retry with no checkpoint to go on from starts over: so do its rows
                self._recorder(t).restart()
                t.fresh_attempt = False
            updates = json.loads(result.get(UPDATES_KEY) or "[]")
            self._recorder(t).epoch(row, updates)  # one transaction per epoch, then the trackers
            t.last_epoch = row["epoch"]
            self.display.epoch(t, row.get("test_acc"))
        if FINAL_KEY in result:
            done = json.loads(result[FINAL_KEY])
            if done["status"] == "failed":  # granet's own error: recorded after this one attempt
                where = f" on node {t.node_ip}" if t.node_ip else ""
                self._fail(t, f"{done['error']} (during epoch {t.last_epoch + 1}{where}; not retried)")
                return
            t.final, t.error = done["final"], done.get("error")
            t.status = done["status"] if done["status"] in ("completed", "diverged") else "failed"
            self._recorder(t).finish(t.status, t.final, done["layers"], t.error)
            self.display.finished(t)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Tune retries the trial (FailureConfig): say why in words, count the attempt."""
        t = self._outcome(trial)
        if t is None:
            return
        if t.status == "pending":
            self._start(t)
        reason = failure_reason(trial, t)
        t.attempts += 1
        t.fresh_attempt, t.last_epoch, t.waiting_since = True, 0, time.monotonic()
        if self.outcome is not None:
            self.outcome.retries += 1
        self._start_attempt(t)
        n = getattr(trial, "num_failures", t.attempts - 1)
        count = f"{n}/{self.max_failures}" if n else "(a preemption does not count against --max-failures)"
        self.display.note(f"[yellow]![/yellow] {t.point.label}: {reason}; retrying {count}")

    def on_step_end(self, iteration, trials, **info):
        """A retry that has not started after WAIT_NOTE_S waits for a node with room for it: say so, once."""
        for trial in trials:
            t = self._outcome(trial)
            if t is None or t.waiting_since is None or time.monotonic() - t.waiting_since < WAIT_NOTE_S:
                continue
            t.waiting_since = None
            if trial.status == "PENDING":
                need = getattr(trial.placement_group_factory, "required_resources", {}) or {}
                room = f"{need.get('CPU', 0):g} CPU + {need.get('GPU', 0):g} GPU"
                self.display.note(
                    f"[yellow]..[/yellow] {t.point.label}: attempt {t.attempts} waits for a node with {room} free"
                )

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = self._outcome(trial)
        if t is not None and t.status == "running":  # returned without its final report
            self._fail(t, "trial ended without a final result")

    def on_trial_error(self, iteration, trials, trial, **info):
        t = self._outcome(trial)
        if t is None or t.status not in ("pending", "running"):
            return
        if t.status == "pending":  # failed before it started: recorded all the same
            self._start(t)
        reason = failure_reason(trial, t)
        if t.attempts > 1:
            reason += f"; gave up after {t.attempts} attempts (--max-failures {self.max_failures})"
        self._fail(t, reason)


def _make_callback(
    store,
    plan: SweepPlan,
    by_run: dict[str | None, TrialOutcome],
    display: _Display,
    max_failures: int = 0,
    outcome: SweepOutcome | None = None,
    tensorboard: Path | None = None,
):
    """The StoreCallback of a sweep: `_StoreCallbackHooks` as a ray.tune.Callback."""
    from ray import tune

    callback_cls = type("StoreCallback", (_StoreCallbackHooks, tune.Callback), {})
    return callback_cls(store, plan, by_run, display, max_failures, outcome, tensorboard)


class _Terminated(BaseException):
    """SIGTERM: unwinds Tuner.fit so the running trials are recorded as interrupted."""


# ----------------------------------------------------------------------------- the sweep
def run_sweep(plan: SweepPlan, db_path: Path, **options: Any) -> SweepOutcome:
    """`_run_sweep` while holding the db's claim on this sweep's name: a second driver of the same
    sweep into the same db is refused at once (StoreError) instead of running every point twice."""
    from .store import claim_sweep

    with claim_sweep(db_path, plan.name):
        return _run_sweep(plan, db_path, **options)


def _run_sweep(
    plan: SweepPlan,
    db_path: Path,
    *,
    runs_dir: Path = Path("runs"),
    address: str | None = None,
    storage_path: str | os.PathLike | None = None,
    max_failures: int | None = None,
    console=None,
    tensorboard: Path | None = None,
    trackers: Any = None,
) -> SweepOutcome:
    """Run every point of `plan` not done yet as a Ray Tune trial; the driver writes the db.

    Order: read the db (read-only: a name used by another sweep is refused), find checkpoints
    in storage, start or join Ray, check the resources against the largest node, and only then
    write anything. Raises SweepError (Ray could not start, resources too small, name taken)
    and store.StoreError."""
    from rich.console import Console

    from .store import Store

    console = console or Console()
    started_at = time.perf_counter()
    grid = plan.grid
    retries = grid.max_failures if max_failures is None else max_failures
    storage = storage_root(storage_path if storage_path is not None else Path(runs_dir) / "ray")
    experiment = experiment_name(plan)

    prior = read_state(db_path, plan)
    done = {h for h, r in prior.items() if r["status"] in DONE_STATUSES}
    todo_points = [p for p in plan.points if p.spec_hash not in done]
    if not todo_points:
        trials: list[TrialOutcome] = [_done_outcome(p, prior[p.spec_hash]) for p in plan.points]
        return SweepOutcome(plan, trials, len(trials), 0, time.perf_counter() - started_at)

    import ray

    ray_started, local = _init_ray(address)
    store = outcome = None
    try:
        resources, cpus, gpus = _check_before_writing(plan, todo_points)

        # from here on things are written
        store = Store(db_path)
        stale = _mark_stale(store, plan)
        store.add_sweep(plan.sweep_id, plan.name, plan.grid_record())
        trials = _plan_trials(store, plan, find_checkpoints(storage, experiment))
        todo = [t for t in trials if t.status == "pending"]
        outcome = SweepOutcome(
            plan, trials, len(trials) - len(todo), stale, 0.0, resumed=sum(t.resume_from is not None for t in todo)
        )
        if not todo:
            outcome.wall_seconds = time.perf_counter() - started_at
            return outcome

        joined = address or os.environ.get("RAY_ADDRESS")
        where = f"cluster at {joined}" if joined else ("local instance" if ray_started else "running instance")
        console.print(
            f"ray: {where} ({len([n for n in ray.nodes() if n.get('Alive')])} node(s), "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs); "
            f"{len(todo)} trials to run ({outcome.already_done} already done, {outcome.resumed} resuming "
            f"from a checkpoint), {cpus:g} CPU + {gpus:g} GPU each, at most "
            f"{grid.max_concurrent or 'as resources allow'} at once, up to {retries} retries each; "
            f"checkpoints in {storage}/{experiment}",
            highlight=False,
        )
        by_run = {t.run_id: t for t in todo}
        space = _param_space(plan, todo, threads=max(1, int(cpus)))
        best = max(
            (t.final.get("best_test_acc") or 0.0 for t in trials if not t.ran and t.status == "completed"), default=None
        )

        # No tracebacks of failed trials from Tune's loggers: each is recorded and summarised.
        for name in ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.execution.experiment_state"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

        def on_term(signum, frame):
            raise _Terminated()

        old_term = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
        display = _Display(console, plan, len(todo), best)
        try:
            with _tune_env(), _quiet_ray_errors(), display:
                callbacks = [
                    _make_callback(store, plan, by_run, display, retries, outcome, tensorboard),
                    # --wandb / --mlflow: Ray Tune's logger callbacks (sweep_trackers.RayTrackers)
                    *(trackers.callbacks() if trackers else []),
                ]
                tuner = _tuner(plan, space, {"cpu": cpus, "gpu": gpus}, storage, experiment, callbacks, retries)
                tuner.fit()  # failed trials do not raise: each is recorded by the callback
        except (_Terminated, KeyboardInterrupt):  # SIGTERM, or a second Ctrl+C while Tune stops
            outcome.interrupted = True
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        _record_unfinished(store, todo, outcome)
        outcome.wall_seconds = time.perf_counter() - started_at
        return outcome
    finally:
        if store is not None:
            store.close()
        if ray_started:
            _stop_ray(local, outcome, runs_dir)
        elif outcome is not None and (outcome.retries or outcome.count("failed")):
            outcome.ray_logs = _CLUSTER_LOGS


def _tuner(plan: SweepPlan, space: list[dict], resources: dict, storage: str, experiment: str, callbacks, retries: int):
    """The Tune run: a grid over the trials' configs, one checkpointed trial per point, retried
    `retries` times, trial names as granet's, and the driver's callbacks."""
    from ray import tune

    return tune.Tuner(
        tune.with_resources(_trainable, resources),
        param_space={"point": tune.grid_search(space)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=plan.grid.max_concurrent,
            reuse_actors=True,
            trial_name_creator=lambda tr: tr.config["point"]["name"],
            trial_dirname_creator=lambda tr: f"{tr.config['point']['name']}_{tr.trial_id}",
        ),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=experiment,
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=retries, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )


def _done_outcome(p, row: dict) -> TrialOutcome:
    final = {k: row.get(k) for k in ("final_test_acc", "best_test_acc", "final_density", "wall_seconds")}
    return TrialOutcome(p, row["run_id"], row["status"], row.get("error"), final, ran=False)


def _mark_stale(store, plan: SweepPlan) -> int:
    """'running' rows of this sweep left by a driver that was killed -> interrupted (resumable)."""
    stale = store.runs(sweep=plan.sweep_id, status="running")
    for r in stale:
        store.fail_run(r["run_id"], "interrupted", INTERRUPTED)
    return len(stale)


def _plan_trials(store, plan: SweepPlan, checkpoints: dict[str, dict]) -> list[TrialOutcome]:
    """Every point as done (by an earlier invocation) or to run, with a new run id, or the run id of
    the earlier run its checkpoint in storage continues (its rows are replaced, attempts add up)."""
    prior = pick(store.runs(sweep=plan.sweep_id))
    trials = []
    for p in plan.points:
        row = prior.get(p.spec_hash)
        if row is not None and row["status"] in DONE_STATUSES:
            trials.append(_done_outcome(p, row))
            continue
        t = TrialOutcome(p, f"{p.spec_hash[:8]}-{uuid.uuid4().hex[:8]}")
        ck = checkpoints.get(p.spec_hash)
        if ck is not None:
            t.resume_from, t.resume_epoch = ck["path"], int(ck["epoch"])
            earlier = store.run(ck.get("run_id") or "")
            if (
                earlier is not None
                and earlier.get("sweep_id") == plan.sweep_id
                and earlier.get("spec_hash") == p.spec_hash
            ):
                t.run_id = earlier["run_id"]
                t.prior_attempts = int(earlier.get("attempts") or 1)
        trials.append(t)
    return trials


def _param_space(plan: SweepPlan, todo: list[TrialOutcome], *, threads: int) -> list[dict[str, Any]]:
    """One Tune config per trial to run: what `_trainable` needs (plain JSON-able values)."""
    return [
        {
            "run_id": t.run_id,
            "sweep_id": plan.sweep_id,
            "name": t.point.trial_name,
            "spec_hash": t.point.spec_hash,
            "spec_json": json.dumps(plan.run_spec(t.point).normalised()),
            "resume_from": t.resume_from,
            "threads": threads,
        }
        for t in todo
    ]


def _record_unfinished(store, todo: list[TrialOutcome], outcome: SweepOutcome) -> None:
    """Ctrl+C / SIGTERM: Tune stopped the trials before their end; running ones are recorded
    interrupted (resumable), and any left means the sweep was interrupted."""
    for t in todo:
        if t.status == "running":
            t.status, t.error = "interrupted", INTERRUPTED
            assert t.run_id is not None  # every trial to run is given its run id when it is planned
            store.fail_run(t.run_id, "interrupted", INTERRUPTED)
            outcome.interrupted = True
        elif t.status == "pending":
            outcome.interrupted = True


#: Tune settings of the driver (a value the user exported wins):
TUNE_ENV = {
    # the legacy reporter honours verbose=0: no tables of Tune's own beside ours
    "RAY_AIR_NEW_OUTPUT": "0",
    # results buffered in the trial for up to 0.5 s (FIFO scheduling allows it); a report with a
    # checkpoint (every epoch) is sent at once
    "TUNE_RESULT_BUFFER_LENGTH": "1000",
    "TUNE_RESULT_BUFFER_MIN_TIME_S": "0.5",
    # no per-trial result.json/progress.csv/TensorBoard files: the results db is the record
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


@contextmanager
def _tune_env() -> Iterator[None]:
    before = {k: os.environ.get(k) for k in TUNE_ENV}
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, old in before.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
