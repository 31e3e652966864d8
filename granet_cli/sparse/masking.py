"""`Masking`: boolean masks over every conv/linear weight, and their updates.

Integration is two lines, like a `torch.ao.pruning` sparsifier::

    masking = Masking(model, optimizer, SparseConfig(method="granet", final_density=0.1),
                      steps_per_epoch=len(loader), epochs=epochs, sample_input=x[:1])
    ...
    optimizer.step(); masking.step()

Masked weights are stored as zeros in the weight tensor itself (never a `weight * mask`
product in forward), so the gradient of an inactive weight is the true dense gradient
that RigL/GraNet growth ranks. Masks are applied after every optimizer step to the
weights and to the optimizer's state (momentum, Adam moments).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import criteria
from .criteria import count, counts
from .density import kept_count, layer_densities
from .flops import FlopsMeter, layer_macs
from .methods import SparseConfig
from .schedule import CubicSchedule, cosine_drop_fraction

GRADIENT_INITS = ("prune_and_grow_uniform", "prune_and_grow_global", "prune_and_grow_structured")


@dataclass
class SparseLayer:
    name: str  # "<module path>.weight"
    module: nn.Module
    weight: nn.Parameter

    @property
    def mask(self) -> Tensor:
        return self.module.weight_mask


def sparsifiable_layers(model: nn.Module, dense_first_layer: bool = False,
                        dense_classifier: bool = False) -> list[SparseLayer]:
    """Every Conv2d / Linear weight (4-D and 2-D); biases and norm layers stay dense.

    The first such layer is the "first layer"; the last Linear is the classifier.
    """
    found = [SparseLayer(f"{n}.weight" if n else "weight", m, m.weight)
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    linears = [layer for layer in found if isinstance(layer.module, nn.Linear)]
    excluded = set()
    if dense_first_layer and found:
        excluded.add(found[0].name)
    if dense_classifier and linears:
        excluded.add(linears[-1].name)
    return [layer for layer in found if layer.name not in excluded]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Masking:
    """Holds the masks of one model and carries out the method's mask updates."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: Any, *,
                 steps_per_epoch: int, epochs: int, sample_input: Tensor | None = None,
                 init_grads: dict[str, Tensor] | None = None):
        self.cfg = SparseConfig.from_obj(config)
        self.model, self.optimizer = model, optimizer
        self.steps_per_epoch, self.epochs = int(steps_per_epoch), int(epochs)
        self.total_steps = self.steps_per_epoch * self.epochs
        self.layers = sparsifiable_layers(model, self.cfg.dense_first_layer, self.cfg.dense_classifier)
        if not self.layers:
            raise ValueError("model has no Conv2d/Linear weights to sparsify")
        linears = [layer for layer in self.layers if isinstance(layer.module, nn.Linear)]
        self.classifier = linears[-1].name if linears else None
        self.total = sum(layer.weight.numel() for layer in self.layers)
        cfg = self.cfg
        self.schedule = None
        if cfg.gradual:
            final_epoch = cfg.final_prune_epoch if cfg.final_prune_epoch is not None else self.epochs
            self.schedule = CubicSchedule(cfg.init_density, cfg.final_density,
                                          cfg.init_prune_epoch * self.steps_per_epoch,
                                          final_epoch * self.steps_per_epoch, cfg.update_frequency)
        self.update_end_step = (cfg.update_end_epoch * self.steps_per_epoch
                                if cfg.update_end_epoch is not None else None)
        self.step_count = 0
        self.drop_fraction = cfg.prune_rate
        self.history: list[dict[str, Any]] = []
        for layer in self.layers:
            layer.module.register_buffer("weight_mask", torch.ones_like(layer.weight, dtype=torch.bool))
        self._init_masks(init_grads)
        self._sync_masks()
        self.apply_mask()
        self.fired = {layer.name: layer.mask.clone() for layer in self.layers}
        self.meter = FlopsMeter(layer_macs(model, sample_input)) if sample_input is not None else None
        self._refresh()

    # ------------------------------------------------------------------ masks
    def masks(self) -> dict[str, Tensor]:
        return {layer.name: layer.mask for layer in self.layers}

    def _state_tensors(self, layer: SparseLayer) -> Iterator[Tensor]:
        for value in self.optimizer.state.get(layer.weight, {}).values():
            if isinstance(value, Tensor) and value.shape == layer.weight.shape:
                yield value

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero inactive weights and their optimizer state (momentum, Adam moments)."""
        if self._all_dense():
            return
        tensors, masks = [], []
        for layer in self.layers:
            mask = layer.mask
            tensors.append(layer.weight)
            masks.append(mask)
            for state in self._state_tensors(layer):
                tensors.append(state)
                masks.append(mask)
        torch._foreach_mul_(tensors, masks)  # one call for all: this runs after every step

    @torch.no_grad()
    def _zero_at(self, layer: SparseLayer, where: Tensor) -> None:
        layer.weight.masked_fill_(where, 0)
        for state in self._state_tensors(layer):
            state.masked_fill_(where, 0)

    def _all_dense(self) -> bool:
        return getattr(self, "_dense", False)

    def _refresh(self) -> None:
        """Recompute cached counts after the masks changed."""
        names = [layer.name for layer in self.layers]
        self.active = dict(zip(names, counts([layer.mask for layer in self.layers])))
        self._dense = all(self.active[layer.name] == layer.weight.numel() for layer in self.layers)
        for layer in self.layers:
            self.fired[layer.name] |= layer.mask
        self._sparse_forward = self.meter.sparse_forward(self.layer_densities()) if self.meter else 0.0

    def _sync_masks(self, extra: list[Tensor] | None = None) -> None:
        """Masks are decided on rank 0 and broadcast, so every rank holds the same ones."""
        if not _distributed():
            return
        for tensor in [layer.mask for layer in self.layers] + list(extra or []):
            buf = tensor.to(torch.uint8)
            dist.broadcast(buf, src=0)
            tensor.copy_(buf.bool())

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def _init_masks(self, init_grads: dict[str, Tensor] | None) -> None:
        cfg, mode = self.cfg, self.cfg.sparse_init
        if mode in ("GMP", "dense"):
            return  # masks start all ones
        if mode in ("ERK", "ER", "uniform"):
            shapes = {layer.name: tuple(layer.weight.shape) for layer in self.layers}
            densities = layer_densities(shapes, cfg.init_density, mode, cfg.erk_power_scale)
            for layer in self.layers:
                everywhere = torch.ones_like(layer.mask)
                layer.mask.copy_(criteria.grow_random(everywhere, kept_count(densities[layer.name], layer.mask.numel())))
            return
        if not mode.startswith("prune"):
            raise ValueError(f"unknown sparse_init {mode!r}")
        for layer in self.layers:
            layer.mask.copy_(layer.weight != 0)
        before = {layer.name: count(layer.mask) for layer in self.layers}
        if "structured" in mode:
            self._prune_channels(cfg.pruning_rate)
        elif mode.endswith("global"):
            self._prune_global(int(sum(before.values()) * (1 - cfg.pruning_rate)))
        else:
            for layer in self.layers:
                keep = before[layer.name] - math.ceil(cfg.pruning_rate * before[layer.name])
                self._prune_layer(layer, keep)
        for layer in self.layers:
            self._zero_at(layer, ~layer.mask)
        if "grow" not in mode:
            return
        # regrow as many weights as were pruned, by gradient magnitude (reference semantics)
        for layer in self.layers:
            grad = self._init_grad(layer, init_grads)
            regrow = before[layer.name] - count(layer.mask)
            if "structured" in mode:
                grown = self._grow_channels(layer, grad, regrow)
            else:
                grown = criteria.grow_by_score(grad, ~layer.mask, regrow)
            layer.mask.bitwise_or_(grown)

    def _init_grad(self, layer: SparseLayer, init_grads: dict[str, Tensor] | None) -> Tensor:
        grad = (init_grads or {}).get(layer.name, layer.weight.grad)
        if grad is None:
            raise ValueError(f"sparse_init {self.cfg.sparse_init} needs a gradient of the dense model "
                             f"(pass init_grads or run a backward pass first); none for {layer.name}")
        return grad

    def _prune_layer(self, layer: SparseLayer, keep: int) -> int:
        """Keep the `keep` largest-magnitude active weights of one layer; returns how many went."""
        active = count(layer.mask)
        if keep >= active:
            return 0
        layer.mask.copy_(criteria.top_k_mask(layer.weight.detach().abs(), keep, among=layer.mask))
        return active - keep

    def _prune_global(self, keep: int) -> int:
        """Keep the `keep` largest-magnitude active weights across all layers."""
        active = sum(counts([layer.mask for layer in self.layers]))
        if keep >= active:
            return 0
        scores = torch.cat([layer.weight.detach().reshape(-1) for layer in self.layers]).abs_()
        active_flat = torch.cat([layer.mask.reshape(-1) for layer in self.layers])
        chosen = criteria.top_k_mask(scores, keep, among=active_flat)
        for layer, part in zip(self.layers, chosen.split([layer.mask.numel() for layer in self.layers])):
            layer.mask.copy_(part.view_as(layer.mask))
        return active - keep

    def _channel_layers(self) -> list[SparseLayer]:
        """Structured pruning never removes classifier outputs (that would delete classes)."""
        return [layer for layer in self.layers if layer.name != self.classifier]

    def _prune_channels(self, rate: float) -> None:
        for layer in self._channel_layers():
            norms = layer.weight.detach().abs().flatten(1).sum(1)
            alive = layer.mask.flatten(1).any(1)
            n_remove = math.ceil(rate * count(alive))
            gone = criteria.top_k_mask(norms, n_remove, largest=False, among=alive)
            layer.mask[gone] = False

    def _grow_channels(self, layer: SparseLayer, grad: Tensor, n_weights: int) -> Tensor:
        grown = torch.zeros_like(layer.mask)
        if layer.name == self.classifier or n_weights <= 0:
            return grown
        per_channel = layer.mask[0].numel()
        dead = ~layer.mask.flatten(1).any(1)
        scores = grad.abs().flatten(1).sum(1)
        grown[criteria.grow_by_score(scores, dead, n_weights // per_channel)] = True
        return grown

    # ------------------------------------------------------------------ training-time updates
    @property
    def needs_dense_gradient(self) -> bool:
        return self.cfg.drop_and_grow and self.cfg.growth in ("gradient", "momentum")

    def _drop_and_grow_due(self, t: int) -> bool:
        cfg = self.cfg
        if not cfg.drop_and_grow or t % cfg.update_frequency:
            return False
        if self.schedule is not None and t < self.schedule.t0:
            return False
        return self.update_end_step is None or t <= self.update_end_step

    @torch.no_grad()
    def step(self) -> dict[str, Any] | None:
        """Call right after `optimizer.step()`. Returns the mask-update record, if any."""
        self.step_count += 1
        t = self.step_count
        record = None
        if self.schedule is not None and self.schedule.is_event(t):
            target = self.schedule.density_at(t)
            self.prune_to(target)
            record = {"step": t, "target_density": target, "dropped": 0, "grown": 0}
        grew = False
        if self._drop_and_grow_due(t):
            dropped, grown = self.drop_and_grow(t)
            grew = True
            if record is None:
                record = {"step": t, "target_density": self.density(), "dropped": 0, "grown": 0}
            record["dropped"], record["grown"] = dropped, grown
        self.apply_mask()
        if record is not None:
            self._refresh()
            record["density"] = self.density()
            self.history.append(record)
        if self.meter is not None:
            dense_grad = (grew and self.cfg.growth == "gradient") or (
                self.cfg.drop_and_grow and self.cfg.growth == "momentum")
            self.meter.add_step(self._sparse_forward, dense_grad)
        return record

    def layer_target(self, layer: SparseLayer, density: float) -> float:
        """Per-layer density of the `_uniform` schedule: the classifier keeps a floor."""
        if layer.name == self.classifier:
            return max(density, min(self.cfg.classifier_min_density, 1.0))
        return density

    def prune_to(self, density: float) -> int:
        """Magnitude-prune to `density` overall (global) or in every layer (uniform)."""
        if self.cfg.pruning_schedule == "uniform":
            pruned = sum(self._prune_layer(layer, kept_count(self.layer_target(layer, density), layer.mask.numel()))
                         for layer in self.layers)
        else:
            pruned = self._prune_global(round(density * self.total))
        self._sync_masks()
        return pruned

    def planned_density(self, density: float) -> float:
        """Overall density a pruning event to `density` will leave, from the current masks."""
        if self.cfg.pruning_schedule == "uniform":
            kept = sum(min(self.active[layer.name], kept_count(self.layer_target(layer, density), layer.mask.numel()))
                       for layer in self.layers)
        else:
            kept = min(sum(self.active.values()), round(density * self.total))
        return kept / self.total

    def drop_and_grow(self, t: int) -> tuple[int, int]:
        """Drop a cosine-decayed fraction of each layer's active weights, regrow as many."""
        cfg = self.cfg
        self.drop_fraction = cosine_drop_fraction(t, self.total_steps, cfg.prune_rate, cfg.prune_rate_min)
        names = [layer.name for layer in self.layers]
        masks = [layer.mask for layer in self.layers]
        weights = [layer.weight for layer in self.layers]
        n_active = counts(masks)
        if cfg.prune == "threshold":
            drops = [criteria.drop_threshold(w, m, cfg.prune_threshold) for w, m in zip(weights, masks)]
        else:
            n_drop = [min(n, math.ceil(self.drop_fraction * n)) for n in n_active]
            if cfg.prune == "SET":
                drops = [criteria.drop_set(w, m, n) for w, m, n in zip(weights, masks, n_drop)]
            else:
                drops = criteria.drop_magnitude_layers(weights, masks, n_drop, n_active)
        survivors = dict(zip(names, (m & ~d for m, d in zip(masks, drops))))
        dropped = dict(zip(names, counts(drops)))
        signal = {}
        if cfg.redistribution != "none":  # only redistribution reads it
            for layer, n in zip(self.layers, n_active):
                signal[layer.name] = (layer.weight.detach().abs()[layer.mask].mean().item() if n else 0.0, n)
        regrow = self._regrow_counts(dropped, survivors, signal)
        grown_masks = self._grow([~survivors[name] for name in names], [regrow[name] for name in names])
        for layer, grow in zip(self.layers, grown_masks):
            layer.mask.copy_(survivors[layer.name] | grow)
        self._sync_masks(grown_masks)
        for layer, grow in zip(self.layers, grown_masks):
            self._zero_at(layer, grow)  # regrown weights start at zero
        return sum(dropped.values()), sum(counts(grown_masks))

    def _grow(self, candidates: list[Tensor], wanted: list[int]) -> list[Tensor]:
        """Per layer, `wanted` (at most all) of the `candidates`, by the growth criterion."""
        n_candidates = counts(candidates)
        ns = [min(n, c) for n, c in zip(wanted, n_candidates)]
        if self.cfg.growth == "random":
            return [criteria.grow_random(c, n) for c, n in zip(candidates, ns)]
        scores = []
        for layer in self.layers:
            score = None
            if self.cfg.growth == "momentum":
                score = criteria.momentum_scores(self.optimizer, layer.weight)
            if score is None:
                score = layer.weight.grad if layer.weight.grad is not None else torch.zeros_like(layer.weight)
            scores.append(score)
        return criteria.grow_by_score_layers(scores, candidates, ns, n_candidates)

    def _regrow_counts(self, dropped: dict[str, int], survivors: dict[str, Tensor],
                       signal: dict[str, tuple[float, int]]) -> dict[str, int]:
        """`none`: each layer regrows what it dropped; otherwise the total is shared out."""
        if self.cfg.redistribution == "none":
            return dict(dropped)
        idx = 0 if self.cfg.redistribution == "magnitude" else 1
        weights = {name: float(signal[name][idx]) for name in dropped}
        caps = {layer.name: layer.mask.numel() - count(survivors[layer.name]) for layer in self.layers}
        return allocate(sum(dropped.values()), weights, caps)

    # ------------------------------------------------------------------ statistics
    def density(self) -> float:
        return sum(self.active.values()) / self.total

    def layer_densities(self) -> dict[str, float]:
        return {layer.name: self.active[layer.name] / layer.weight.numel() for layer in self.layers}

    def layer_stats(self) -> list[dict[str, Any]]:
        return [{"name": layer.name, "shape": list(layer.weight.shape), "numel": layer.weight.numel(),
                 "density": self.active[layer.name] / layer.weight.numel()} for layer in self.layers]

    def itop_rate(self) -> float:
        """In-time over-parameterisation: fraction of weights ever active so far."""
        return sum(count(f) for f in self.fired.values()) / self.total

    def inference_flops_fraction(self) -> float | None:
        return self.meter.inference_fraction(self.layer_densities()) if self.meter else None

    def training_flops_fraction(self) -> float | None:
        return self.meter.training_fraction() if self.meter else None

    def planned_schedule(self) -> list[dict[str, Any]]:
        """Every gradual-pruning event: step and the overall density it leaves."""
        if self.schedule is None:
            return []
        return [{"step": t, "density": self.planned_density(self.schedule.density_at(t))}
                for t in self.schedule.events()]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "drop_fraction": self.drop_fraction,
            "masks": {name: m.clone() for name, m in self.masks().items()},
            "fired": {name: f.clone() for name, f in self.fired.items()},
            "history": list(self.history),
            "flops": self.meter.state_dict() if self.meter else None,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.drop_fraction = float(state["drop_fraction"])
        for layer in self.layers:
            layer.mask.copy_(state["masks"][layer.name])
            self.fired[layer.name].copy_(state["fired"][layer.name])
        self.history = list(state["history"])
        if self.meter is not None and state.get("flops"):
            self.meter.load_state_dict(state["flops"])
        self._refresh()
        self.apply_mask()


def allocate(total: int, weights: dict[str, float], caps: dict[str, int]) -> dict[str, int]:
    """Share `total` out proportionally to `weights`, never above `caps`; exact sum (largest remainder)."""
    counts = dict.fromkeys(weights, 0)
    remaining = min(total, sum(caps.values()))
    while remaining > 0:
        room = {n: caps[n] - counts[n] for n in weights if counts[n] < caps[n]}
        w = {n: max(weights[n], 0.0) for n in room}
        if not any(w.values()):
            w = dict.fromkeys(room, 1.0)
        share = {n: remaining * w[n] / sum(w.values()) for n in room}
        give = {n: min(int(share[n]), room[n]) for n in room}
        left = remaining - sum(give.values())
        for n in sorted(room, key=lambda n: share[n] - int(share[n]), reverse=True):
            if left == 0:
                break
            if give[n] < room[n]:
                give[n] += 1
                left -= 1
        for n, g in give.items():
            counts[n] += g
        remaining -= sum(give.values())
    return counts
