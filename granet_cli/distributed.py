"""`granet run --nproc N`: torch DDP on one machine (gloo on CPU, nccl on GPU).

The parent process spawns N ranks and stays the only writer of results: rank 0
sends its epoch rows through a queue, every rank sends its final mask digest, and
the parent refuses a run whose ranks ended with different masks.
"""

from __future__ import annotations

import os
import queue as queue_mod
import socket
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .spec import RunSpec
from .train import RunResult


class DistributedSetupError(ValueError):
    """The requested process count does not fit the machine (bad input, exit 2)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world: int, port: int, spec_data: dict, run_dir: str, resume: bool, events, threads: int
) -> None:
    from . import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "gloo" if spec_data["device"] == "cpu" else "nccl"
    try:
        dist.init_process_group(backend, rank=rank, world_size=world)
        spec = RunSpec.model_validate(spec_data)
        result = train.run(
            spec,
            run_dir,
            resume=resume,
            threads=threads,
            on_start=(lambda: events.put(("start", rank, None))) if rank == 0 else None,
            on_epoch=(lambda row, updates: events.put(("epoch", rank, (row, updates)))) if rank == 0 else None,
        )
        events.put(("done", rank, asdict(result)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
        events.put(("error", rank, f"{type(e).__name__}: {e}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(
    spec: RunSpec,
    run_dir: str | os.PathLike,
    nproc: int,
    *,
    resume: bool = False,
    on_start: Callable[[], None] | None = None,
    on_epoch: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
) -> RunResult:
    """Run `spec` on `nproc` DDP ranks; callbacks run here, in the parent.

    CUDA DDP needs one GPU per rank (nccl); with fewer GPUs, `device: auto` trains on
    CPU with gloo and `device: cuda` is an error.
    """
    enough_gpus = torch.cuda.device_count() >= nproc
    if spec.device == "cuda" and not enough_gpus:
        raise DistributedSetupError(
            f"--nproc {nproc} with device cuda needs {nproc} GPUs, found {torch.cuda.device_count()}"
        )
    device = "cuda" if spec.device != "cpu" and enough_gpus else "cpu"
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // nproc)
    port = _free_port()
    procs = [
        ctx.Process(
            target=_worker,
            daemon=True,
            args=(
                r,
                nproc,
                port,
                {**spec.model_dump(mode="json"), "device": device},
                str(Path(run_dir)),
                resume,
                events,
                threads,
            ),
        )
        for r in range(nproc)
    ]
    for p in procs:
        p.start()
    results: dict[int, dict] = {}
    try:
        while len(results) < nproc:
            try:
                kind, rank, payload = events.get(timeout=1.0)
            except queue_mod.Empty:
                dead = [i for i, p in enumerate(procs) if not p.is_alive() and i not in results]
                if dead:
                    raise RuntimeError(
                        f"DDP rank {dead[0]} exited without a result (exit code {procs[dead[0]].exitcode})"
                    ) from None
                continue
            if kind == "start" and on_start:
                on_start()
            elif kind == "epoch" and on_epoch:
                on_epoch(*payload)
            elif kind == "done":
                results[rank] = payload
            elif kind == "error":
                raise RuntimeError(f"DDP rank {rank} failed: {payload}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    digests = {r: res["mask_digest"] for r, res in results.items()}
    if len(set(digests.values())) != 1:
        raise RuntimeError(f"masks differ across DDP ranks: {digests}")
    return RunResult(**results[0])
