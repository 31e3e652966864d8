"""Ray itself for a sweep: start a local instance or join a cluster (auth token checked first),
stop it, check a trial fits one node, and say a trial's failure in words (a lost or preempted node
by its address and id, instead of Ray's raw RPC text).

Kept apart from the Tune run (`backend`) because this is what changes with Ray's versions and
internals; every import of Ray is inside a function, so importing this module imports no Ray.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plan import SweepError, SweepOutcome, TrialOutcome

if TYPE_CHECKING:
    from .local_ray import LocalRay

#: where a cluster keeps Ray's logs (said when a trial of a sweep on it failed or was retried)
CLUSTER_LOGS = (
    "Ray's logs: on each node of the cluster, in <temp dir>/session_latest/logs (the temp dir is "
    "/tmp/ray unless `ray start --temp-dir` said otherwise); raylet.out there says why a node went away"
)


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
def quiet_ray_errors() -> Iterator[None]:
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


def init_ray(address: str | None) -> tuple[bool, LocalRay | None]:
    """Join `address` / $RAY_ADDRESS, else start a local instance on all CPUs, watched so that
    nothing of it outlives this process (`local_ray`). (True if we started it, its watchdog)."""
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
    if address:
        return True, None
    from .local_ray import LocalRay  # here, so `python -m granet_cli.sweep.local_ray` finds it unimported

    return True, LocalRay.watch()


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


def stop_ray(local: LocalRay | None, outcome: SweepOutcome | None, runs_dir: Path) -> None:
    """Stop the instance we started and remove its session folder; when a trial failed or was
    retried, keep Ray's logs under <runs-dir>/ray-logs/ (a cluster keeps them on its nodes), said in the summary."""
    import ray

    ray.shutdown()
    troubled = outcome is not None and (outcome.retries > 0 or outcome.count("failed") > 0)
    if local is None:  # joined a cluster: its nodes keep their logs
        if troubled and outcome is not None:
            outcome.ray_logs = CLUSTER_LOGS
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
