"""One GraNet mask update on CIFAR ResNet-50 (or `--model`): ours vs the reference algorithm.

One update event = global magnitude prune to the cubic schedule's density, then
per-layer drop-and-grow with gradient growth. Ours is `Masking.step()` at a step
where both are due (it also re-applies the masks and refreshes counts, ITOP and
FLOPs). The reference is `ReferenceGraNet` below: a straightforward copy of the
GraNet repository's algorithm (sparselearning/core.py: `pruning`,
`truncate_weights`, `magnitude_death`, `gradient_growth`, `apply_mask`) with
float32 masks, sorts and a global `torch.topk`.

Both start from the same masks, weights, gradients and momentum. Weights and
gradients are built without ties (distinct float32 magnitudes, random signs),
so both must give exactly the same masks; the script asserts it.

    .venv/bin/python benchmarks/mask_update.py [--device auto|cpu|cuda] [--repeats N] [--model NAME]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_overhead import add_model_arg, build_bench_model, describe_device, pick_device, sgd, sync  # noqa: E402

from granet_cli.sparse.masking import Masking  # noqa: E402
from granet_cli.sparse.methods import SparseConfig  # noqa: E402
from granet_cli.sparse.schedule import cosine_drop_fraction  # noqa: E402


# ----------------------------------------------------------------------------- the reference
class ReferenceGraNet:
    """GraNet's reference mask update (Liu et al. 2021, sparselearning/core.py), float32 masks."""

    def __init__(
        self,
        named_weights: dict[str, torch.nn.Parameter],
        masks: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
    ):
        self.weights, self.optimizer = named_weights, optimizer
        self.masks = {name: mask.float() for name, mask in masks.items()}

    @torch.no_grad()
    def apply_mask(self) -> None:
        for name, weight in self.weights.items():
            weight.data = weight.data * self.masks[name]
            state = self.optimizer.state[weight]
            if "momentum_buffer" in state:
                state["momentum_buffer"] = state["momentum_buffer"] * self.masks[name]

    @torch.no_grad()
    def prune_global(self, density: float) -> None:
        """`pruning`: keep int(total * density) weights by a global top-k of |w|."""
        all_scores = torch.cat([torch.flatten(torch.abs(w)) for w in self.weights.values()])
        num_params_to_keep = int(len(all_scores) * density)
        threshold, _ = torch.topk(all_scores, num_params_to_keep, sorted=True)
        acceptable_score = threshold[-1]
        for name, weight in self.weights.items():
            self.masks[name] = (torch.abs(weight) >= acceptable_score).float()
        self.apply_mask()

    @torch.no_grad()
    def truncate_weights(self, death_rate: float) -> None:
        """Magnitude death in every layer, then gradient growth of as many."""
        regrow = {}
        for name, weight in self.weights.items():
            mask = self.masks[name]
            nonzeros = mask.sum().item()
            zeros = mask.numel() - nonzeros
            new_mask = self.magnitude_death(weight, death_rate, nonzeros, zeros)
            regrow[name] = int(nonzeros - new_mask.sum().item())
            self.masks[name][:] = new_mask
        for name, weight in self.weights.items():
            new_mask = self.masks[name].data.byte()
            new_mask = self.gradient_growth(new_mask, regrow[name], weight)
            self.masks[name] = new_mask.float()
        self.apply_mask()

    @staticmethod
    def magnitude_death(weight, death_rate: float, nonzeros: float, zeros: float) -> torch.Tensor:
        num_remove = math.ceil(death_rate * nonzeros)
        if num_remove == 0.0:
            return weight.data != 0.0
        x, _ = torch.sort(torch.abs(weight.data.view(-1)))
        k = math.ceil(zeros + num_remove)
        threshold = x[k - 1].item()
        return torch.abs(weight.data) > threshold

    @staticmethod
    def gradient_growth(new_mask: torch.Tensor, total_regrowth: int, weight) -> torch.Tensor:
        grad = weight.grad.clone()
        grad = grad * (new_mask == 0).float()
        _, idx = torch.sort(torch.abs(grad).flatten(), descending=True)
        new_mask.data.view(-1)[idx[:total_regrowth]] = 1.0
        return new_mask


# ----------------------------------------------------------------------------- set-up
def distinct_values(n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` float32 values of pairwise distinct magnitude (from 2^-8 up), random signs.

    Distinct bit patterns of positive floats are distinct values, in the same order.
    """
    low = 0x3B800000  # bit pattern of 2^-8
    bits = torch.randperm(n, generator=generator).to(torch.int32) + low
    signs = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
    return bits.view(torch.float32) * signs


def granet_event_setup(args, device: torch.device):
    """A GraNet run just before a step where both pruning and drop-and-grow are due."""
    torch.manual_seed(args.seed)
    model = build_bench_model(args.model).to(device)
    optimizer = sgd(model)
    config = SparseConfig(
        method="granet",
        init_density=0.5,
        final_density=0.1,
        update_frequency=args.update_frequency,
        final_prune_epoch=args.final_prune_epoch,
    )
    masking = Masking(model, optimizer, config, steps_per_epoch=args.steps_per_epoch, epochs=args.epochs)
    events = masking.schedule.events()
    t = events[min(args.event, len(events) - 2)]
    total = masking.total
    # the reference keeps int(total * d), ours round(d * total): take an event where they agree
    while int(total * masking.schedule.density_at(t)) != round(masking.schedule.density_at(t) * total):
        t = events[events.index(t) + 1]

    gen = torch.Generator().manual_seed(args.seed)
    values, grads = distinct_values(total, gen), distinct_values(total, gen)
    offset = 0
    with torch.no_grad():
        for layer in masking.layers:
            n = layer.weight.numel()
            layer.weight.copy_(values[offset : offset + n].view_as(layer.weight))
            layer.weight.grad = grads[offset : offset + n].view_as(layer.weight).to(device)
            optimizer.state[layer.weight]["momentum_buffer"] = torch.randn_like(layer.weight)
            offset += n
    # bring the masks to the previous event's density, as a real run would have them
    previous = events[events.index(t) - 1] if events.index(t) else None
    if previous is not None:
        masking.prune_to(masking.schedule.density_at(previous))
    masking.apply_mask()
    state = masking.state_dict()
    state["step_count"] = t - 1
    masking.load_state_dict(state)
    return model, optimizer, masking, t


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--repeats", type=int, default=5, help="timed updates of each (median reported)")
    p.add_argument("--seed", type=int, default=0)
    add_model_arg(p)
    p.add_argument("--steps-per-epoch", type=int, default=391, help="CIFAR, batch 128")
    p.add_argument("--epochs", type=int, default=160)
    p.add_argument("--final-prune-epoch", type=int, default=110)
    p.add_argument("--update-frequency", type=int, default=1000)
    p.add_argument("--event", type=int, default=5, help="which pruning event (index) to time")
    args = p.parse_args(argv)
    device = pick_device(args.device)

    model, optimizer, masking, t = granet_event_setup(args, device)
    weights = {layer.name: layer.weight for layer in masking.layers}
    start_weights = {name: w.detach().clone() for name, w in weights.items()}
    start_momentum = {name: optimizer.state[w]["momentum_buffer"].clone() for name, w in weights.items()}
    start_state = masking.state_dict()
    start_masks = {name: m.clone() for name, m in masking.masks().items()}
    density = masking.schedule.density_at(t)
    rate = cosine_drop_fraction(t, masking.total_steps, masking.cfg.drop_fraction, masking.cfg.drop_fraction_min)

    def restore() -> None:
        with torch.no_grad():
            for name, w in weights.items():
                w.data = start_weights[name].clone()
                optimizer.state[w]["momentum_buffer"] = start_momentum[name].clone()
        masking.load_state_dict(start_state)

    def ours() -> dict[str, torch.Tensor]:
        restore()
        sync(device)
        begin = time.perf_counter()
        record = masking.step()
        sync(device)
        times_ours.append(time.perf_counter() - begin)
        # no redistribution: every weight that really left (dropped, not reselected) is replaced
        assert record is not None and record["dropped"] > 0, record
        assert record["grown"] == record["dropped"] - record["reselected"], record
        return {name: m.clone() for name, m in masking.masks().items()}

    def reference() -> dict[str, torch.Tensor]:
        restore()
        ref = ReferenceGraNet(weights, start_masks, optimizer)
        sync(device)
        begin = time.perf_counter()
        ref.prune_global(density)
        ref.truncate_weights(rate)
        sync(device)
        times_ref.append(time.perf_counter() - begin)
        return {name: m.bool() for name, m in ref.masks.items()}

    print(f"mask_update: one GraNet update on CIFAR {args.model}, {describe_device(device)}, torch {torch.__version__}")
    print(
        f"  step {t}: density {masking.density():.4f} -> {density:.4f} (global prune), "
        f"then drop-and-grow {rate:.3f} of each layer's active weights; {masking.total:,} weights, "
        f"{len(masking.layers)} layers"
    )
    times_ours: list[float] = []
    times_ref: list[float] = []
    mine, theirs = ours(), reference()  # warm-up, and the correctness check
    for name in mine:
        n_mine, n_theirs = int(mine[name].sum()), int(theirs[name].sum())
        assert n_mine == n_theirs, f"{name}: {n_mine} active weights, reference {n_theirs}"
        assert torch.equal(mine[name], theirs[name]), f"{name}: same counts but different masks"
    kept = sum(int(m.sum()) for m in mine.values())
    print(f"  check: both keep {kept:,} weights, identical masks in all {len(mine)} layers")
    times_ours.clear()
    times_ref.clear()
    for i in range(args.repeats):  # alternate, so drifts hit both alike
        if i % 2:
            reference(), ours()
        else:
            ours(), reference()
    med_ours, med_ref = statistics.median(times_ours), statistics.median(times_ref)
    speedup = med_ref / med_ours
    print(f"  ours       median {med_ours * 1e3:9.1f} ms  (min {min(times_ours) * 1e3:.1f}) over {args.repeats}")
    print(f"  reference  median {med_ref * 1e3:9.1f} ms  (min {min(times_ref) * 1e3:.1f}) over {args.repeats}")
    print(f"mask_update: speed-up vs reference = {speedup:.2f}x (target >= 3x)")
    return speedup


if __name__ == "__main__":
    main()
