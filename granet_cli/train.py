"""Training loop: one RunSpec -> per-epoch metric rows, checkpoints, a final summary.

`run()` is the single trainer used by `granet run` (in-process), `granet run --nproc N`
(torch DDP, see `distributed.py`) and every Ray Tune trial of `granet sweep`. It never
touches the results database: callers receive rows through `on_epoch` and write them.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .data import build_loaders
from .models import build_model
from .sparse.masking import GRADIENT_INITS, Masking
from .spec import RunSpec

CHECKPOINT = "checkpoint.pt"
EpochCallback = Callable[[dict[str, Any], list[dict[str, Any]]], None]


class ResumeError(RuntimeError):
    """`--resume` without a usable checkpoint."""


class DeviceError(RuntimeError):
    """The spec asks for a device this machine does not have."""


@dataclass
class RunResult:
    status: str  # completed | diverged
    final: dict[str, Any]
    layers: list[dict[str, Any]]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    mask_updates: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    mask_digest: str = ""


# ----------------------------------------------------------------------------- set-up helpers
def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device: cuda requested but torch sees no CUDA device (use device: auto or cpu)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if dist.is_initialized():
        return torch.device("cuda", dist.get_rank() % torch.cuda.device_count())
    return torch.device("cuda")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # warn_only: some CUDA kernels (e.g. kthvalue) have no deterministic variant
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    o = spec.optim
    if o.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                           weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0)


def lr_factor(spec: RunSpec, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr after `step` optimizer steps (warmup, then multistep/cosine)."""
    o = spec.optim
    warm = o.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if o.lr_schedule == "multistep":
        epoch = step // steps_per_epoch
        return o.gamma ** sum(epoch >= round(m * o.epochs) for m in o.milestones)
    if o.lr_schedule == "cosine":
        total = o.epochs * steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / max(1, total - warm)))
    return 1.0


def _rng_state(loader_gen: torch.Generator | None) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "loader": loader_gen.get_state() if loader_gen is not None else None,
    }


def _set_rng_state(state: dict[str, Any], loader_gen: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if loader_gen is not None and state.get("loader") is not None:
        loader_gen.set_state(state["loader"])


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _mask_digest(masking: Masking) -> str:
    import hashlib

    h = hashlib.sha256()
    for layer in masking.layers:
        h.update(layer.mask.detach().to("cpu", torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _init_gradients(model: nn.Module, loader, device) -> None:
    """prune_and_grow_* inits rank regrowth by the gradient of one dense batch.

    The batch comes from the test loader so the training order stays untouched."""
    x, y = next(iter(loader))
    model.zero_grad()
    nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()


#: top-5 accuracy is recorded for datasets with at least this many classes (CIFAR-100, ImageNet)
TOP5_MIN_CLASSES = 100


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, criterion, amp: bool) -> tuple[float, float, float | None]:
    """Test loss, top-1 accuracy and (with >= 100 classes) top-5 accuracy."""
    model.eval()
    loss_sum, correct, correct5, count = 0.0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            out = model(x)
            loss = criterion(out, y)
        loss_sum += float(loss) * y.numel()
        correct += int((out.argmax(1) == y).sum())
        if out.shape[1] >= TOP5_MIN_CLASSES:
            correct5 += int((out.topk(5, dim=1).indices == y[:, None]).any(1).sum())
        count += y.numel()
    model.train()
    top5 = correct5 / max(count, 1) if out.shape[1] >= TOP5_MIN_CLASSES else None
    return loss_sum / max(count, 1), correct / max(count, 1), top5


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()


def _all_reduce_sums(values: list[float], device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- the loop
def run(spec: RunSpec, run_dir: str | os.PathLike, *, resume: bool = False,
        on_epoch: EpochCallback | None = None, on_start: Callable[[], None] | None = None,
        progress: bool = False, threads: int | None = None) -> RunResult:
    """Train `spec` to the end (or to divergence). Checkpoints into `run_dir` every epoch.

    With `resume=True` the run continues from `run_dir/checkpoint.pt` and first replays
    the epochs already done through `on_epoch`, so a caller can rewrite them idempotently.
    `on_start` runs once data, model and masks exist: a caller that records the run there
    records nothing for a run that fails at set-up (missing data, unknown model).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    seed_everything(spec.seed, spec.deterministic)
    device = pick_device(spec.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    loaders = build_loaders(spec.data, spec.seed, rank=rank, world_size=world)
    info = loaders.info
    steps_per_epoch = len(loaders.train)
    model = build_model(spec.model, info.num_classes, tuple(info.input_shape)).to(device)
    if spec.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(spec, model)
    if spec.sparsity.sparse_init in GRADIENT_INITS:
        _init_gradients(model, loaders.test, device)
    sample = next(iter(loaders.test))[0][:1].to(device)
    masking = Masking(model, optimizer, spec.sparsity, steps_per_epoch=steps_per_epoch,
                      epochs=spec.optim.epochs, sample_input=sample)
    optimizer.zero_grad(set_to_none=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(spec, s, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=spec.amp and device.type == "cuda")
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.optim.label_smoothing)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    loader_gen = getattr(loaders.train, "generator", None)

    epochs_done: list[dict[str, Any]] = []
    start_epoch, wall_before, best = 0, 0.0, 0.0
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        if not ckpt_path.is_file():
            raise ResumeError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        masking.load_state_dict(ckpt["masking"])
        _set_rng_state(ckpt["rng"], loader_gen)
        start_epoch, wall_before, best = ckpt["epoch"], ckpt["wall_seconds"], ckpt["best_test_acc"]
        epochs_done = list(ckpt["epochs"])
    if on_start is not None and rank == 0:
        on_start()
    if resume:
        if on_epoch is not None and rank == 0:
            seen = 0
            for row in epochs_done:
                new = [u for u in masking.history if u["step"] <= row["step"]][seen:]
                seen += len(new)
                on_epoch(row, new)

    bar = _Progress(spec, steps_per_epoch) if progress and rank == 0 else None
    started = time.perf_counter()
    status, error, samples = "completed", None, 0
    history_sent = len(masking.history)
    try:
        for epoch in range(start_epoch, spec.optim.epochs):
            t_epoch = time.perf_counter()
            if hasattr(loaders.train.sampler, "set_epoch"):
                loaders.train.sampler.set_epoch(epoch)
            loss_sum, correct, count = 0.0, 0, 0
            for x, y in loaders.train:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if spec.channels_last and device.type == "cuda" and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, spec.amp):
                    out = net(x)
                    loss = criterion(out, y)
                if not torch.isfinite(loss):
                    raise _Diverged(f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {masking.step_count + 1}")
                optimizer.zero_grad(set_to_none=False)
                scaler.scale(loss).backward()
                if spec.optim.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), spec.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                masking.step()
                scheduler.step()
                loss_value = float(loss.detach())
                loss_sum += loss_value * y.numel()
                correct += int((out.detach().argmax(1) == y).sum())
                count += y.numel()
                if bar:
                    bar.advance(loss_value, masking.density())
            loss_sum, correct, count = _all_reduce_sums([loss_sum, correct, count], device)
            samples += int(count)
            test_loss, test_acc, test_acc5 = (evaluate(model, loaders.test, device, criterion, spec.amp)
                                              if rank == 0 else (0.0, 0.0, None))
            if not math.isfinite(test_loss):
                raise _Diverged(f"test loss became {test_loss} at epoch {epoch + 1}")
            best = max(best, test_acc)
            row = {
                "epoch": epoch + 1, "step": masking.step_count, "lr": optimizer.param_groups[0]["lr"],
                "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
                "test_loss": test_loss, "test_acc": test_acc, "density": masking.density(),
                "itop_rate": masking.itop_rate(), "seconds": time.perf_counter() - t_epoch,
                "test_acc5": test_acc5,
            }
            epochs_done.append(row)
            if rank == 0:
                _save_atomic({
                    "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "masking": masking.state_dict(), "rng": _rng_state(loader_gen),
                    "wall_seconds": wall_before + time.perf_counter() - started,
                    "best_test_acc": best, "epochs": epochs_done,
                }, ckpt_path)
            new_updates = masking.history[history_sent:]
            history_sent = len(masking.history)
            if bar:
                bar.epoch_done(row)
            if on_epoch is not None and rank == 0:
                on_epoch(row, new_updates)
    except _Diverged as e:
        status, error = "diverged", str(e)
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - started
    last = epochs_done[-1] if epochs_done else {}
    final = {
        "final_test_acc": last.get("test_acc"),
        "best_test_acc": best if epochs_done else None,
        "final_test_acc5": last.get("test_acc5"),
        "final_density": masking.density(),
        "itop_rate": masking.itop_rate(),
        "train_flops_frac": masking.training_flops_fraction(),
        "inference_flops_frac": masking.inference_flops_fraction(),
        "wall_seconds": wall_before + elapsed,
        "samples_per_second": samples / elapsed if elapsed > 0 else None,
    }
    layers = [{"name": s["name"], "shape": str(s["shape"]), "numel": s["numel"], "final_density": s["density"]}
              for s in masking.layer_stats()]
    return RunResult(status, final, layers, epochs_done, list(masking.history), error, _mask_digest(masking))


class _Diverged(Exception):
    pass


class _Progress:
    """A rich progress bar with loss, accuracy and density (only in interactive runs)."""

    def __init__(self, spec: RunSpec, steps_per_epoch: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
        self.progress.start()
        label = f"{spec.sparsity.method} d={spec.sparsity.final_density:g}"
        self.task = self.progress.add_task(label, total=spec.optim.epochs * steps_per_epoch, info="")
        self.last_acc = ""

    def advance(self, loss: float, density: float) -> None:
        self.progress.update(self.task, advance=1, info=f"loss {loss:.3f} density {density:.3f}{self.last_acc}")

    def epoch_done(self, row: dict[str, Any]) -> None:
        self.last_acc = f" test acc {row['test_acc']:.4f} (epoch {row['epoch']})"

    def close(self) -> None:
        self.progress.stop()
