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

from .checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    check_owner,
    load_checkpoint,
    rng_state,
    run_identity,
    save_atomic,
    set_rng_state,
)
from .data import build_loaders
from .models import build_model
from .sparse.density import kept_count
from .sparse.masking import Masking, sparsifiable_layers
from .sparse.rules import needs_init_gradient
from .spec import RunSpec, check_schedule_size
from .store import examples
from .store.columns import metric_row
from .text import one_line as _one_line

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
    return torch.optim.SGD(
        model.parameters(),
        lr=o.lr,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        nesterov=o.nesterov and o.momentum > 0,
    )


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
def evaluate(
    model: nn.Module, loader, device, criterion, amp: bool, per_example: list[Any] | None = None
) -> tuple[float, float, float | None]:
    """Test loss, top-1 accuracy and (with >= 100 classes) top-5 accuracy. `per_example`, if given,
    receives each batch's top-1 correctness (CPU bool tensors, in the loader's order)."""
    model.eval()
    loss_sum, correct, correct5, count = 0.0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            out = model(x)
            loss = criterion(out, y)
        loss_sum += float(loss) * y.numel()
        hits = out.argmax(1) == y
        correct += int(hits.sum())
        if per_example is not None:
            per_example.append(hits.cpu())
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


# ----------------------------------------------------------------------------- sparsity checks
class SparsityError(ValueError):
    """The target leaves a layer without a single weight: the network would be cut in two."""


def empty_layers_problem(masking: Masking, final_density: float) -> str | None:
    """A one-line problem if a layer has (or, under a per-layer schedule, will have) no weights."""
    for layer in masking.layers:
        kept = masking.active[layer.name]
        if masking.cfg.pruning_schedule == "uniform":
            kept = min(kept, kept_count(masking.layer_target(layer, final_density), layer.weight.numel()))
        if kept == 0:
            return (
                f"density {final_density:g} leaves layer {layer.name} "
                f"({layer.weight.numel():,} weights) with no weight at all; raise the density, or keep the "
                f"layer dense (sparsity.dense_first_layer / dense_classifier)"
            )
    return None


def overall_density(masking: Masking, model: nn.Module) -> float:
    """Density over every conv/linear weight, layers kept dense included (counts of the masks)."""
    everything = sum(layer.weight.numel() for layer in sparsifiable_layers(model))
    kept_dense = everything - masking.total
    return (sum(masking.active.values()) + kept_dense) / everything


def selected_epoch(rows: list[dict[str, Any]], spec: RunSpec) -> dict[str, Any] | None:
    """The reference's model selection: the epoch of best validation accuracy (earliest on a tie)
    among the epochs measured at the target density (from final_prune_epoch on for gradual
    schedules; every epoch otherwise). None without a validation split."""
    sp = spec.sparsity
    first = sp.final_prune_epoch if sp.gradual else 1
    candidates = [r for r in rows if r["epoch"] >= first and r.get("val_acc") is not None]
    best = None
    for r in candidates:
        if best is None or r["val_acc"] > best["val_acc"]:
            best = r
    return best


# ----------------------------------------------------------------------------- the loop
@dataclass
class Session:
    """Everything one training run holds: built once by `setup`, advanced by `train_epoch`."""

    spec: RunSpec
    device: torch.device
    rank: int
    world: int
    loaders: Any
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    criterion: nn.Module
    masking: Masking
    loader_gen: torch.Generator | None
    epochs_done: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    wall_before: float = 0.0
    #: the run this session trains: stored in every checkpoint, checked on --resume
    run_id: str | None = None
    spec_hash: str | None = None
    #: which test examples the last evaluated model / the selected (best-validation) epoch's got right
    test_correct: str | None = None
    selected_test_correct: str | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loaders.train)


def setup(spec: RunSpec, threads: int | None = None) -> Session:
    """Data, model, optimizer and masks of a (multiplier-scaled) spec; SparsityError if a layer is empty."""
    if threads:
        torch.set_num_threads(threads)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    seed_everything(spec.seed, spec.deterministic)
    device = pick_device(spec.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    loaders = build_loaders(**spec.data.model_dump(), seed=spec.seed, rank=rank, world_size=world)
    info = loaders.info
    steps_per_epoch = len(loaders.train)
    try:  # as `plan` does: a schedule of millions of mask updates is refused before the model exists
        check_schedule_size(spec, steps_per_epoch)
    except ValueError as e:
        raise SparsityError(str(e)) from None
    model = build_model(
        spec.model.name, info.num_classes, tuple(info.input_shape), fan_in_init=spec.model.fan_in_init
    ).to(device)
    if spec.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(spec, model)
    if needs_init_gradient(spec.sparsity):
        _init_gradients(model, loaders.test, device)
    sample = next(iter(loaders.test))[0][:1].to(device)
    masking = Masking(
        model, optimizer, spec.sparsity, steps_per_epoch=steps_per_epoch, epochs=spec.optim.epochs, sample_input=sample
    )
    problem = empty_layers_problem(masking, spec.sparsity.final_density)
    if problem:
        raise SparsityError(f"sparsity.final_density: {problem}")
    optimizer.zero_grad(set_to_none=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(spec, s, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=spec.amp and device.type == "cuda")
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.optim.label_smoothing)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    return Session(
        spec,
        device,
        rank,
        world,
        loaders,
        model,
        net,
        optimizer,
        scheduler,
        scaler,
        criterion,
        masking,
        getattr(loaders.train, "generator", None),
    )


def restore(s: Session, ckpt_path: Path) -> None:
    """Continue from an epoch checkpoint: weights, optimizer, masks, schedules, RNG and the rows so far."""
    if not ckpt_path.is_file():
        raise ResumeError(f"--resume: no checkpoint at {ckpt_path}")
    hint = "; delete it or run without --resume to start this spec again"
    try:
        ckpt = load_checkpoint(ckpt_path, s.device)
        check_owner(ckpt, ckpt_path, s.run_id, s.spec_hash)
    except CheckpointError as e:
        raise ResumeError(f"--resume: {e}{hint}") from None
    try:
        s.model.load_state_dict(ckpt["model"])
        s.optimizer.load_state_dict(ckpt["optimizer"])
        s.scheduler.load_state_dict(ckpt["scheduler"])
        s.scaler.load_state_dict(ckpt["scaler"])
        s.masking.load_state_dict(ckpt["masking"])
        set_rng_state(ckpt["rng"], s.loader_gen)
        s.start_epoch, s.wall_before = int(ckpt["epoch"]), float(ckpt["wall_seconds"])
        s.epochs_done = list(ckpt["epochs"])
        s.test_correct, s.selected_test_correct = ckpt.get("test_correct"), ckpt.get("selected_test_correct")
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        why = f"no {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {_one_line(e, 120)}"
        raise ResumeError(f"--resume: checkpoint {ckpt_path} does not fit this run ({why}){hint}") from None


def save_checkpoint(s: Session, path: Path, wall_seconds: float) -> None:
    save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "run_id": s.run_id,
            "spec_hash": s.spec_hash,
            "epoch": s.epochs_done[-1]["epoch"],
            "model": s.model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict(),
            "masking": s.masking.state_dict(),
            "rng": rng_state(s.loader_gen),
            "wall_seconds": wall_seconds,
            "best_test_acc": max(r["test_acc"] for r in s.epochs_done),
            "epochs": s.epochs_done,
            "test_correct": s.test_correct,
            "selected_test_correct": s.selected_test_correct,
        },
        path,
    )


def train_epoch(s: Session, epoch: int, bar: _Progress | None) -> tuple[float, float, float]:
    """One pass over the training data; returns (loss sum, correct, samples) over all ranks."""
    spec, masking, device = s.spec, s.masking, s.device
    if hasattr(s.loaders.train.sampler, "set_epoch"):
        s.loaders.train.sampler.set_epoch(epoch)
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in s.loaders.train:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if spec.channels_last and device.type == "cuda" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, spec.amp):
            out = s.net(x)
            loss = s.criterion(out, y)
        if not torch.isfinite(loss):
            raise _Diverged(f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {masking.step_count + 1}")
        s.optimizer.zero_grad(set_to_none=False)
        s.scaler.scale(loss).backward()
        if spec.optim.grad_clip:
            s.scaler.unscale_(s.optimizer)
            nn.utils.clip_grad_norm_(s.model.parameters(), spec.optim.grad_clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        if masking.step() is not None:
            problem = empty_layers_problem(masking, masking.density())
            if problem:
                raise SparsityError(f"pruning at step {masking.step_count}: {problem}")
        s.scheduler.step()
        loss_value = float(loss.detach())
        loss_sum += loss_value * y.numel()
        correct += int((out.detach().argmax(1) == y).sum())
        count += y.numel()
        if bar:
            bar.advance(loss_value, masking.density())
    return tuple(_all_reduce_sums([loss_sum, correct, count], device))  # type: ignore[return-value]


def epoch_row(s: Session, epoch: int, sums: tuple[float, float, float], seconds: float) -> dict[str, Any]:
    """The epoch's metrics, measured on the masked model (masks are in force after every step)."""
    loss_sum, correct, count = sums
    on_rank0 = s.rank == 0
    hits: list[Any] = []
    test_loss, test_acc, test_acc5 = (
        evaluate(s.model, s.loaders.test, s.device, s.criterion, s.spec.amp, hits) if on_rank0 else (0.0, 0.0, None)
    )
    if hits:
        s.test_correct = examples.pack(torch.cat(hits).numpy())
    if not math.isfinite(test_loss):
        raise _Diverged(f"test loss became {test_loss} at epoch {epoch + 1}")
    val_loss = val_acc = None
    if s.loaders.val is not None and on_rank0:
        val_loss, val_acc, _ = evaluate(s.model, s.loaders.val, s.device, s.criterion, s.spec.amp)
    values = {
        "epoch": epoch + 1,
        "step": s.masking.step_count,
        "lr": s.optimizer.param_groups[0]["lr"],
        "train_loss": loss_sum / max(count, 1),
        "train_acc": correct / max(count, 1),
        "test_loss": test_loss,
        "test_acc": test_acc,
        "density": s.masking.density(),
        "itop_rate": s.masking.itop_rate(),
        "seconds": seconds,
        "test_acc5": test_acc5,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "overall_density": overall_density(s.masking, s.model),
    }
    return metric_row("epoch", values)


def final_metrics(s: Session, wall_seconds: float, samples: int, elapsed: float) -> dict[str, Any]:
    rows, m = s.epochs_done, s.masking
    last = rows[-1] if rows else {}
    chosen = selected_epoch(rows, s.spec)
    return metric_row(
        "final",
        {
            "final_test_acc": last.get("test_acc"),
            "best_test_acc": max(r["test_acc"] for r in rows) if rows else None,
            "selected_test_acc": chosen["test_acc"] if chosen else None,
            "final_test_acc5": last.get("test_acc5"),
            "achieved_density": m.density(),
            "nonzero_density": m.nonzero_density(),
            "overall_density": overall_density(m, s.model),
            "itop_rate": m.itop_rate(),
            "train_flops_frac": m.training_flops_fraction(),
            "inference_flops_frac": m.inference_flops_fraction(),
            "wall_seconds": wall_seconds,
            "samples_per_second": samples / elapsed if elapsed > 0 else None,
            "test_correct": s.test_correct,
            "selected_test_correct": s.selected_test_correct if chosen else None,
        },
    )


def run(
    spec: RunSpec,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    on_start: Callable[[], None] | None = None,
    progress: bool = False,
    threads: int | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Train `spec` to the end (or to divergence). Checkpoints into `run_dir` every epoch.

    With `resume=True` the run continues from `run_dir/checkpoint.pt` and first replays
    the epochs already done through `on_epoch`, so a caller can rewrite them idempotently.
    `on_start` runs once data, model and masks exist: a caller that records the run there
    records nothing for a run that fails at set-up (missing data, unknown model, empty layer).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    s = setup(spec.scaled(), threads)
    s.run_id, s.spec_hash = run_id or run_identity(run_dir), spec.spec_hash()
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        restore(s, ckpt_path)
    if on_start is not None and s.rank == 0:
        on_start()
    if resume and on_epoch is not None and s.rank == 0:
        seen = 0
        for row in s.epochs_done:
            new = [u for u in s.masking.history if u["step"] <= row["step"]][seen:]
            seen += len(new)
            on_epoch(row, new)

    bar = _Progress(s.spec, s.steps_per_epoch) if progress and s.rank == 0 else None
    started = time.perf_counter()
    status, error, samples = "completed", None, 0
    history_sent = len(s.masking.history)
    try:
        for epoch in range(s.start_epoch, s.spec.optim.epochs):
            t_epoch = time.perf_counter()
            sums = train_epoch(s, epoch, bar)
            samples += int(sums[2])
            row = epoch_row(s, epoch, sums, time.perf_counter() - t_epoch)
            s.epochs_done.append(row)
            if selected_epoch(s.epochs_done, s.spec) is row:  # the reference's model selection moved here
                s.selected_test_correct = s.test_correct
            if s.rank == 0:
                save_checkpoint(s, ckpt_path, s.wall_before + time.perf_counter() - started)
            new_updates = s.masking.history[history_sent:]
            history_sent = len(s.masking.history)
            if bar:
                bar.epoch_done(row)
            if on_epoch is not None and s.rank == 0:
                on_epoch(row, new_updates)
    except _Diverged as e:
        status, error = "diverged", str(e)
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - started
    final = final_metrics(s, s.wall_before + elapsed, samples, elapsed)
    layers = [
        {"name": st["name"], "shape": str(st["shape"]), "numel": st["numel"], "achieved_density": st["density"]}
        for st in s.masking.layer_stats()
    ]
    return RunResult(status, final, layers, s.epochs_done, list(s.masking.history), error, _mask_digest(s.masking))


class _Diverged(Exception):
    pass


class _Progress:
    """A rich progress bar with loss, accuracy and density (only in interactive runs)."""

    def __init__(self, spec: RunSpec, steps_per_epoch: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.progress.start()
        label = f"{spec.sparsity.method} d={spec.sparsity.final_density:g}"
        self.task = self.progress.add_task(label, total=spec.optim.epochs * steps_per_epoch, info="")
        self.epochs = spec.optim.epochs
        self.last_info = self.last_acc = ""

    def advance(self, loss: float, density: float) -> None:
        self.last_info = f"loss {loss:.3f} density {density:.3f}"
        self.progress.update(self.task, advance=1, info=self.last_info + self.last_acc)

    def epoch_done(self, row: dict[str, Any]) -> None:
        # shown at once, so the bar's last line is the final epoch's accuracy, as a percentage like the summary
        self.last_acc = f" test acc {100 * row['test_acc']:.2f} % (epoch {row['epoch']}/{self.epochs})"
        self.progress.update(self.task, info=self.last_info + self.last_acc)

    def close(self) -> None:
        self.progress.stop()
