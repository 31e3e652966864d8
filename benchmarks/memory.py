"""Memory of the sparse core: bytes of mask state per weight, and peak RSS of a training step.

Per-weight state: the boolean masks (module buffers `weight_mask`), the ITOP `fired`
masks, and any other tensor `Masking` holds, in bytes per sparsifiable weight of
CIFAR ResNet-50 or `--model` (the reference implementation keeps float32 masks: 4 bytes).

Peak RSS: a dense and a sparse (granet masking at density 0.1) training step of
ResNet-50, batch 32, each in a fresh subprocess (`ru_maxrss`, run side by side), so peaks don't mix;
a third process also runs a mask-update step (prune + drop-and-grow) for reference.

    .venv/bin/python benchmarks/memory.py [--device auto|cpu|cuda] [--steps N] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_overhead import NEVER, add_model_arg, build_bench_model, pick_device, sgd, sync, train_step  # noqa: E402

from granet_cli.sparse.masking import Masking  # noqa: E402
from granet_cli.sparse.methods import SparseConfig  # noqa: E402

MiB = 1 << 20


def tensor_bytes(obj, skip: tuple = ()) -> int:
    """Bytes of every tensor reachable through dicts, lists and tuples of `obj`."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for k, v in obj.items() if k not in skip)
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def make_masking(model, optimizer, x, update_at: int | None = None) -> Masking:
    """GraNet masking at density 0.1; with `update_at`, it starts at 0.12 and step `update_at`
    is one GraNet update: global prune to 0.1, then drop-and-grow."""
    if update_at is None:
        config = SparseConfig(method="granet", init_density=0.1, final_density=0.1, update_frequency=NEVER)
        return Masking(model, optimizer, config, steps_per_epoch=NEVER, epochs=1, sample_input=x[:1])
    config = SparseConfig(
        method="granet", init_density=0.12, final_density=0.1, update_frequency=update_at, final_prune_epoch=1
    )
    return Masking(model, optimizer, config, steps_per_epoch=update_at, epochs=2, sample_input=x[:1])


def child(mode: str, steps: int, device: torch.device, model_name: str) -> dict:
    """One process, one kind of training step: dense | sparse | update (sparse + mask update)."""
    torch.manual_seed(0)
    model = build_bench_model(model_name).to(device)
    optimizer = sgd(model)
    x = torch.randn(32, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (32,), device=device)
    masking = None if mode == "dense" else make_masking(model, optimizer, x, steps if mode == "update" else None)
    for _ in range(steps):
        train_step(model, optimizer, x, y, masking)
    sync(device)
    if mode == "update":
        [event] = masking.history
        assert event["step"] == steps and event["grown"] > 0 and abs(event["density"] - 0.1) < 1e-6, event
    out = {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux: KiB
    if device.type == "cuda":
        out["peak_cuda"] = torch.cuda.max_memory_allocated(device)
    return out


def state_per_weight(model_name: str) -> dict[str, float]:
    """Bytes per sparsifiable weight of the masks, the fired masks, and anything else Masking holds."""
    model = build_bench_model(model_name)
    x = torch.randn(1, 3, 32, 32)
    masking = make_masking(model, sgd(model), x)
    n = masking.total
    masks = sum(tensor_bytes(layer.mask) for layer in masking.layers)
    fired = tensor_bytes(masking.fired)
    other = tensor_bytes(vars(masking), skip=("fired", "model", "optimizer", "layers"))
    return {
        "weights": n,
        "masks": masks / n,
        "fired": fired / n,
        "other": other / n,
        "total": (masks + fired + other) / n,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=2, help="training steps per process (the first allocates state)")
    add_model_arg(p)
    p.add_argument("--child", choices=("dense", "sparse", "update"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    if args.child:
        print(json.dumps(child(args.child, args.steps, device, args.model)))
        return {}

    per_weight = state_per_weight(args.model)
    print(f"memory: CIFAR {args.model}, {per_weight['weights']:,} sparsifiable weights, torch {torch.__version__}")
    print(f"  masks (bool buffers)   {per_weight['masks']:.2f} bytes/weight  (reference float32 masks: 4.00)")
    print(f"  ITOP fired masks       {per_weight['fired']:.2f} bytes/weight")
    print(f"  other Masking tensors  {per_weight['other']:.2f} bytes/weight")
    print(f"  sparse-core state      {per_weight['total']:.2f} bytes/weight in all")
    # one fresh process per mode, all at once: each peak is its own process's high-water mark
    procs = {}
    for mode in ("dense", "sparse", "update"):
        cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps)]
        cmd += ["--device", device.type, "--model", args.model]
        procs[mode] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {}
    for mode, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.stderr.write(out + err)
            raise SystemExit(f"memory: the {mode} child process failed (exit {proc.returncode})")
        peaks[mode] = json.loads(out.strip().splitlines()[-1])
    label = {
        "dense": "dense step",
        "sparse": "sparse step (granet, density 0.1)",
        "update": "sparse step + one mask update",
    }
    print(f"  peak RSS, batch 32, {args.steps} steps, {device.type}, one fresh process each:")
    for mode, peak in peaks.items():
        extra = f"   peak CUDA allocated {peak['peak_cuda'] / MiB:8.1f} MiB" if "peak_cuda" in peak else ""
        print(f"    {label[mode]:34s} {peak['peak_rss'] / MiB:8.1f} MiB{extra}")
    if device.type == "cuda":
        cuda = peaks["sparse"]["peak_cuda"] / peaks["dense"]["peak_cuda"]
        cuda_update = peaks["update"]["peak_cuda"] / peaks["dense"]["peak_cuda"]
        print(f"  peak CUDA allocated sparse/dense = {cuda:.2f}x (with a mask update: {cuda_update:.2f}x)")
    ratio = peaks["sparse"]["peak_rss"] / peaks["dense"]["peak_rss"]
    with_update = peaks["update"]["peak_rss"] / peaks["dense"]["peak_rss"]
    print(
        f"memory: mask bytes per weight = {per_weight['masks']:.2f} (target 1); "
        f"peak RSS sparse/dense = {ratio:.2f}x (with a mask update: {with_update:.2f}x)"
    )
    return {"per_weight": per_weight, "peaks": peaks}


if __name__ == "__main__":
    main()
