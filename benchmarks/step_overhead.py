"""Step overhead of GraNet masking: a sparse training step over a dense one.

CIFAR ResNet-50 (`--model` picks another registered model, e.g. `resnet32` for the quick run),
batch 32, synthetic data. The dense and the masked model are
built from the same initial weights and stepped alternately (ABBA order) in one
process, after a warm-up, so machine noise hits both alike. Only non-update
steps are timed: update_frequency is huge, so `masking.step()` just applies the
masks (weights and momentum) and counts FLOPs.

    .venv/bin/python benchmarks/step_overhead.py [--device auto|cpu|cuda] [--steps N] [--model NAME]

The helpers at the top (`build_bench_model`, `add_model_arg`, `pick_device`, `sync`) are shared by
the other benchmarks of this folder.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granet_cli.sparse.masking import Masking  # noqa: E402
from granet_cli.sparse.methods import SparseConfig  # noqa: E402

NEVER = 10**9  # an update frequency / epoch length no benchmark ever reaches


# ----------------------------------------------------------------------------- shared helpers
def build_bench_model(name: str = "resnet50", num_classes: int = 10) -> torch.nn.Module:
    """`build_model(name, num_classes, (3, 32, 32))`: CIFAR ResNet-50 by default.

    Falls back to loading models/resnet_cifar.py by path where the package cannot be imported
    (e.g. a bare GPU machine without pydantic); only resnet50 is available then.
    """
    try:
        from granet_cli.models import build_model
    except ImportError:
        if name != "resnet50":
            raise
        path = ROOT / "granet_cli" / "models" / "resnet_cifar.py"
        spec = importlib.util.spec_from_file_location("_resnet_cifar", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.resnet50(num_classes, (3, 32, 32))
    return build_model(name, num_classes, (3, 32, 32))


def add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="resnet50",
        help="registered model, CIFAR input (default resnet50; the quick run uses resnet32)",
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The CIFAR recipe's optimizer: SGD, momentum 0.9, weight decay 5e-4."""
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def train_step(model, optimizer, x, y, masking=None) -> None:
    """One training step as the trainer does it: forward, backward, optimizer step, masking step."""
    optimizer.zero_grad(set_to_none=False)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    if masking is not None:
        masking.step()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- benchmark
def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--steps", type=int, default=None, help="measured steps of each model (default: 10 on CPU, 200 on CUDA)"
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps of each (default: 2 CPU, 20 CUDA)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    add_model_arg(p)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps if args.steps is not None else (200 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 2)

    torch.manual_seed(args.seed)
    base = build_bench_model(args.model)
    dense, sparse = copy.deepcopy(base).to(device), copy.deepcopy(base).to(device)
    del base
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    opt_dense, opt_sparse = sgd(dense), sgd(sparse)
    config = SparseConfig(method="granet", final_density=0.1, update_frequency=NEVER)
    masking = Masking(sparse, opt_sparse, config, steps_per_epoch=NEVER, epochs=1, sample_input=x[:1])

    def timed_step(model, optimizer, masking=None) -> float:
        sync(device)
        start = time.perf_counter()
        train_step(model, optimizer, x, y, masking)
        sync(device)
        return time.perf_counter() - start

    def mask_step() -> float:
        """`masking.step()` alone, device drained before and after (an upper bound of its cost)."""
        sync(device)
        start = time.perf_counter()
        masking.step()
        sync(device)
        return time.perf_counter() - start

    print(
        f"step_overhead: CIFAR {args.model}, batch {args.batch}, {describe_device(device)}, torch {torch.__version__}"
    )
    print(
        f"  masking: granet, density {masking.density():.3f} over {masking.total:,} weights "
        f"in {len(masking.layers)} layers; {warmup} warm-up + {steps} measured steps each, alternating"
    )
    for _ in range(warmup):
        timed_step(dense, opt_dense)
        timed_step(sparse, opt_sparse, masking)
    t_dense, t_sparse = [], []
    for i in range(steps):
        if i % 2 == 0:  # ABBA: dense first on even steps, sparse first on odd ones
            t_dense.append(timed_step(dense, opt_dense))
            t_sparse.append(timed_step(sparse, opt_sparse, masking))
        else:
            t_sparse.append(timed_step(sparse, opt_sparse, masking))
            t_dense.append(timed_step(dense, opt_dense))
    mask_times = [mask_step() for _ in range(max(steps, 5))]
    assert not masking.history, "a mask update happened during measurement"

    med_dense, med_sparse = statistics.median(t_dense), statistics.median(t_sparse)
    med_mask = statistics.median(mask_times)
    paired = statistics.median(s / d for s, d in zip(t_sparse, t_dense))
    ratio = med_sparse / med_dense
    for label, times in (("dense step", t_dense), ("sparse step", t_sparse)):
        print(
            f"  {label:16s} median {statistics.median(times) * 1e3:9.2f} ms  "
            f"(min {min(times) * 1e3:.2f}, max {max(times) * 1e3:.2f})"
        )
    print(
        f"  masking.step()   median {med_mask * 1e3:9.2f} ms  alone, synchronised "
        f"({med_mask / med_dense:.1%} of a dense step)"
    )
    print(f"  median of paired ratios {paired:.3f}")
    print(f"step_overhead: sparse/dense step time = {ratio:.3f}x (target <= 1.05)")
    return ratio


if __name__ == "__main__":
    main()
