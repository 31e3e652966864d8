"""`granet sweep` on a real 2-node Ray cluster (head + worker started by the test on 127.0.0.1,
one CPU each): a worker node killed mid-trial, and resources checked against the largest node.

Marked slow + ray: each test starts its own cluster with `ray start --block` and stops it by
signalling those processes (never a global `ray stop`).
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from granet_cli import train
from granet_cli.sweep import MARKER, plan_sweep
from granet_cli.sweep.local_ray import session_pids

from ..conftest import ROOT, SMALL_SWEEP, rows

pytestmark = [pytest.mark.slow, pytest.mark.ray]

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _proc_children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class LocalCluster:
    """A head and worker nodes on 127.0.0.1, each `ray start --block` (its own process group)."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = tempfile.mkdtemp(prefix="granet-ray-", dir="/tmp")  # Ray's socket paths are length-limited
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # Ray's default health checks: a dead node is marked dead only ~30 s after it went
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        for k in [k for k in self.env if k.startswith("RAY_health_check")]:
            self.env.pop(k)
        self.tmp_path = tmp_path
        self.nodes: list[tuple[subprocess.Popen, Path, object]] = []
        self.node_ids: list[str] = []  # in start order: [head, worker, ...]

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log_path = self.tmp_path / f"ray-{name}.log"
        log = open(log_path, "w")
        ports = [
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        proc = subprocess.Popen(
            [
                str(RAY),
                "start",
                *args,
                "--num-cpus=1",
                "--node-ip-address=127.0.0.1",
                *ports,
                "--disable-usage-stats",
                "--block",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.nodes.append((proc, log_path, log))
        deadline = time.time() + 120
        while "Ray runtime started" not in log_path.read_text():
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()
            time.sleep(0.5)
        return proc

    def start_head(self) -> subprocess.Popen:
        proc = self._start(
            ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp}"], "head"
        )
        self.node_ids.extend(self.alive_nodes())
        return proc

    def add_worker(self) -> subprocess.Popen:
        proc = self._start([f"--address={self.address}"], f"worker{len(self.nodes)}")
        deadline, before = time.time() + 60, set(self.node_ids)
        while len(self.alive_nodes()) < len(self.nodes):  # until the head counts it
            assert time.time() < deadline, "the worker never joined"
            time.sleep(0.5)
        self.node_ids.extend(set(self.alive_nodes()) - before)
        return proc

    def alive_nodes(self) -> list[str]:
        """Node ids of the alive nodes, as the cluster's GCS sees them."""
        code = (
            f"import ray, logging; ray.init(address='{self.address}', logging_level=logging.ERROR, "
            "log_to_driver=False); print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))"
        )
        r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return r.stdout.strip().splitlines()[-1].split() if r.returncode == 0 and r.stdout.strip() else []

    @staticmethod
    def raylet_of(node: subprocess.Popen) -> int:
        pids = [p for p in _descendants(node.pid) if _comm(p) == "raylet"]
        assert len(pids) == 1, pids
        return pids[0]

    @staticmethod
    def trials_on(node: subprocess.Popen) -> list[str]:
        """Tune trial folders being trained on this node: Tune runs each trial in its own working
        directory (.../working_dirs/<trial folder>), a descendant process of the node's raylet."""
        names = []
        for pid in _descendants(node.pid):
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if "/working_dirs/" in cwd:
                names.append(Path(cwd).name)
        return sorted(set(names))

    def stop(self) -> None:
        for proc, _, _ in reversed(self.nodes):  # `ray start --block` stops its own processes on SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, log in reversed(self.nodes):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            log.close()
        # every process of this cluster (by its folder: each keeps its logs open there), e.g. the
        # agents of a killed raylet: ended now, and none may survive
        left = session_pids(Path(self.temp))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while [p for p in left if _alive(p)] and time.time() < deadline:
            time.sleep(0.2)
        self.survivors = [(p, _comm(p)) for p in left if _alive(p)]
        self.leftovers = [(p, _comm(p)) for p in left]
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One head and one worker for this module (the node-kill test goes last: it kills the worker)."""
    if not RAY.exists():
        pytest.skip("no `ray` executable beside the interpreter")
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_head()
        c.add_worker()
        yield c
    finally:
        c.stop()
    assert not c.survivors, c.survivors


def _sweep(tmp_path, cluster, *args, timeout=420):
    cmd = [
        sys.executable,
        "-m",
        "granet_cli.cli",
        "sweep",
        "--address",
        cluster.address,
        *map(str, args),
        "--db",
        str(tmp_path / "r.duckdb"),
        "--storage-path",
        str(tmp_path / "storage"),
    ]
    return cmd, dict(cwd=ROOT, env=cluster.env, text=True)


def _checkpoint_epochs(storage: Path) -> dict[str, int]:
    """trial folder -> highest checkpointed epoch, read from the checkpoints Tune wrote to storage."""
    out = {}
    for marker in storage.glob(f"*/*/checkpoint_*/{MARKER}"):
        try:
            epoch = json.loads(marker.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            continue
        trial = marker.parent.parent.name
        out[trial] = max(out.get(trial, 0), epoch)
    return out


def test_trial_larger_than_every_node_exits_2_and_writes_nothing(cluster, tmp_path):
    """Two 1-CPU nodes have 2 CPUs in all, but no trial of 2 CPUs can ever start."""
    cmd, kw = _sweep(
        tmp_path,
        cluster,
        "--methods",
        "granet",
        "--densities",
        "0.1",
        "--cpus-per-trial",
        "2",
        "--set",
        "optim.epochs=1",
        "--set",
        "sparsity.final_prune_epoch=1",
    )
    r = subprocess.run(cmd, capture_output=True, timeout=180, **kw)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --cpus-per-trial 2"), r.stderr
    assert re.search(r"the largest node \(\S+\) has 1 CPUs and 0 GPUs \(2 node\(s\), 2 CPUs", lines[0]), r.stderr
    assert not (tmp_path / "r.duckdb").exists() and not (tmp_path / "storage").exists()


def test_wrong_auth_token_is_one_stderr_line_at_once(cluster, tmp_path):
    """Ray itself would log the refusal (gcs_client.cc) once a second for ~20 s first."""
    cmd, kw = _sweep(tmp_path, cluster, "--methods", "granet", "--densities", "0.1", *SMALL_SWEEP)
    kw["env"] = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    started = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, timeout=120, **kw)
    took = time.monotonic() - started
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: could not join the Ray cluster at {cluster.address}: it refused"), r.stderr
    assert "the token sent is not the cluster's" in lines[0] and took < 10, (took, r.stderr)
    assert not (tmp_path / "r.duckdb").exists() and not (tmp_path / "storage").exists()


EPOCHS = 30
ARGS = [
    "--checkpoint-every",  # a Tune checkpoint every epoch: the lost worker's trial goes on from one
    "0",
    "--methods",
    "granet",
    "--densities",
    "0.1",
    "--grid",
    "optim.lr=0.05,0.1",
    "--max-concurrent",
    "2",
    "--set",
    f"optim.epochs={EPOCHS}",
    "--set",
    "sparsity.final_prune_epoch=15",
]


def test_worker_node_killed_mid_trial_the_trial_finishes_on_the_head_exactly(cluster, tmp_path):
    cmd, kw = _sweep(tmp_path, cluster, *ARGS)
    log_path = tmp_path / "sweep.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
        try:
            storage, deadline = tmp_path / "storage", time.time() + 300
            worker = cluster.nodes[1][0]
            while True:  # the worker node's trial is past a checkpoint and far from its end
                assert proc.poll() is None and time.time() < deadline, log_path.read_text()
                on_worker = cluster.trials_on(worker)
                epochs = _checkpoint_epochs(storage)
                if on_worker and 2 <= epochs.get(on_worker[0], 0):
                    assert epochs[on_worker[0]] <= EPOCHS - 6, f"too late to kill: {epochs}"
                    break
                time.sleep(0.2)
            os.kill(cluster.raylet_of(cluster.nodes[1][0]), signal.SIGKILL)  # the worker node dies
            proc.wait(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = log_path.read_text()
    assert proc.returncode == 0, out
    flat = " ".join(out.split())
    lost = re.findall(r"node \S+ \(([0-9a-f]{8})\) lost during epoch (\d+)[^;]*; retrying 1/2", flat)
    assert len(lost) == 1, out
    assert lost[0][0] == cluster.node_ids[1][:8] and int(lost[0][1]) >= 3, out  # the worker, after 2 checkpoints
    for raw in ("ActorDiedError", "state-dump", "rpc_code", "Socket closed", "The task may"):
        assert raw not in out, out
    assert "Ray's logs: on each node of the cluster" in flat, out

    db = tmp_path / "r.duckdb"
    plan = plan_sweep(
        None,
        [f"optim.epochs={EPOCHS}", "sparsity.final_prune_epoch=15"],
        methods="granet",
        densities="0.1",
        grid=["optim.lr=0.05,0.1"],
    )
    runs = rows(
        db, "select run_id, spec_hash, status, final_test_acc, best_test_acc, achieved_density, itop_rate from runs"
    )
    assert len(runs) == 2 and all(r[2] == "completed" for r in runs), runs
    for p in plan.points:
        run_id, _, _, acc, best, density, itop = next(r for r in runs if r[1] == p.spec_hash)
        direct = train.run(p.spec, tmp_path / f"direct-{p.spec_hash}", threads=1)  # never interrupted
        assert (acc, best, density, itop) == (
            direct.final["final_test_acc"],
            direct.final["best_test_acc"],
            direct.final["achieved_density"],
            direct.final["itop_rate"],
        )
        assert rows(db, "select epoch from epochs where run_id = ? order by epoch", run_id) == [
            (e,) for e in range(1, EPOCHS + 1)
        ]
        got = rows(db, "select step, dropped, grown from mask_updates where run_id = ? order by step", run_id)
        assert got == [(u["step"], u["dropped"], u["grown"]) for u in direct.mask_updates]
        # the masks the trial ended with (its last checkpoint in storage) are the uninterrupted run's
        last = max(
            (tmp_path / "storage").glob(f"*/*/checkpoint_*/{MARKER}"),
            key=lambda m: (json.loads(m.read_text())["spec_hash"] == p.spec_hash, json.loads(m.read_text())["epoch"]),
        )
        ours = torch.load(last.parent / train.CHECKPOINT, weights_only=False)["model"]
        theirs = torch.load(tmp_path / f"direct-{p.spec_hash}" / train.CHECKPOINT, weights_only=False)["model"]
        masks = [k for k in theirs if k.endswith("weight_mask")]
        assert masks and all(torch.equal(ours[k], theirs[k]) for k in masks)
    assert rows(db, "select count(*) from epochs") == [(2 * EPOCHS,)]
