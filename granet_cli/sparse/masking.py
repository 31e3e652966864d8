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

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import pruning, rules, scores, updates
from .criteria import counts
from .density import kept_count
from .flops import FlopsMeter, layer_macs
from .initial import initial_masks
from .layers import SparseLayer, sparsifiable_layers
from .methods import SparseConfig
from .observers import FlopsObserver, ITOPTracker, MaskObserver
from .schedule import CubicSchedule, cosine_drop_fraction
from .updates import DropAndGrow


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Masking:
    """Holds the masks of one model and carries out the method's mask updates.

    The rules (which weights to drop, grow, keep at init) come from `rules`' registries,
    looked up by the config's names; the bookkeeping is here. `observers` (ITOP, FLOPs and
    any passed in) follow every mask change and every step.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: Any,
        *,
        steps_per_epoch: int,
        epochs: int,
        sample_input: Tensor | None = None,
        init_grads: dict[str, Tensor] | None = None,
        observers: Sequence[MaskObserver] = (),
    ):
        self.cfg = cfg = SparseConfig.from_obj(config)
        self.model, self.optimizer = model, optimizer
        self.steps_per_epoch, self.epochs = int(steps_per_epoch), int(epochs)
        self.total_steps = self.steps_per_epoch * self.epochs
        self.layers = sparsifiable_layers(model, cfg.dense_first_layer, cfg.dense_classifier)
        if not self.layers:
            raise ValueError("model has no Conv2d/Linear weights to sparsify")
        linears = [layer for layer in self.layers if isinstance(layer.module, nn.Linear)]
        self.classifier = linears[-1].name if linears else None
        self.total = sum(layer.weight.numel() for layer in self.layers)
        self.init_rule = rules.lookup(rules.INIT_RULES, "sparse_init", cfg.sparse_init)
        scores.lookup(cfg.prune, "prune")
        self.prune_score = scores.lookup(cfg.prune_score, "prune_score")
        if self.prune_score.selection != "top_k":
            raise ValueError(
                f"prune_score {cfg.prune_score!r} cannot prune to an exact density; "
                f"choose from {', '.join(scores.names(selection='top_k'))}"
            )
        self.growth_rule = rules.lookup(rules.GROWTH_RULES, "growth", cfg.growth)
        self.redistribution = rules.lookup(rules.REDISTRIBUTION_RULES, "redistribution", cfg.redistribution)
        self.schedule = self._schedule()
        self.update_end_step = cfg.update_end_epoch * self.steps_per_epoch if cfg.update_end_epoch is not None else None
        self.step_count = 0
        self.drop_fraction = cfg.drop_fraction
        self.history: list[dict[str, Any]] = []
        for layer in self.layers:
            layer.module.register_buffer("weight_mask", torch.ones_like(layer.weight, dtype=torch.bool))
        self._init_masks(init_grads)
        self.sync_masks()
        self.apply_mask()
        self._observe(sample_input, observers)
        self._refresh()

    def _schedule(self) -> CubicSchedule | None:
        cfg = self.cfg
        if not cfg.gradual:
            return None
        final_epoch = cfg.final_prune_epoch if cfg.final_prune_epoch is not None else self.epochs
        assert cfg.init_density is not None  # SparseConfig.__post_init__ fills it from the method preset
        return CubicSchedule(
            cfg.init_density,
            cfg.final_density,
            cfg.init_prune_epoch * self.steps_per_epoch,
            final_epoch * self.steps_per_epoch,
            cfg.update_frequency,
        )

    def _observe(self, sample_input: Tensor | None, extra: Sequence[MaskObserver]) -> None:
        """ITOP always; FLOPs when a sample input gives the layer sizes; then any passed in."""
        self.itop = ITOPTracker(self.masks())
        self.flops = (
            FlopsObserver(FlopsMeter(layer_macs(self.model, sample_input))) if sample_input is not None else None
        )
        self.observers: list[MaskObserver] = [self.itop]
        if self.flops is not None:
            self.observers.append(self.flops)
        self.observers.extend(extra)

    # ------------------------------------------------------------------ masks
    def masks(self) -> dict[str, Tensor]:
        return {layer.name: layer.mask for layer in self.layers}

    @property
    def fired(self) -> dict[str, Tensor]:
        """Per layer, every weight that has ever been active (the ITOP observer's state)."""
        return self.itop.fired

    @property
    def meter(self) -> FlopsMeter | None:
        return self.flops.meter if self.flops else None

    def _state_tensors(self, layer: SparseLayer) -> Iterator[Tensor]:
        for value in self.optimizer.state.get(layer.weight, {}).values():
            if isinstance(value, Tensor) and value.shape == layer.weight.shape:
                yield value

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero inactive weights and their optimizer state (momentum, Adam moments)."""
        if self._all_dense():
            return
        tensors: list[Tensor] = []
        masks: list[Any] = []  # (the stubs type _foreach_mul_'s second list as scalars)
        for layer in self.layers:
            mask = layer.mask
            tensors.append(layer.weight)
            masks.append(mask)
            for state in self._state_tensors(layer):
                tensors.append(state)
                masks.append(mask)
        torch._foreach_mul_(tensors, masks)  # one call for all: this runs after every step

    @torch.no_grad()
    def zero_at(self, layer: SparseLayer, where: Tensor) -> None:
        layer.weight.masked_fill_(where, 0)
        for state in self._state_tensors(layer):
            state.masked_fill_(where, 0)

    def _all_dense(self) -> bool:
        return getattr(self, "_dense", False)

    def _refresh(self) -> None:
        """Recompute cached counts after the masks changed, and tell the observers."""
        names = [layer.name for layer in self.layers]
        self.active = dict(zip(names, counts([layer.mask for layer in self.layers])))
        self._dense = all(self.active[layer.name] == layer.weight.numel() for layer in self.layers)
        for observer in self.observers:
            observer.on_masks_changed(self)

    def sync_masks(self, extra: list[Tensor] | None = None) -> None:
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
        initial_masks(self, init_grads)

    # ------------------------------------------------------------------ training-time updates
    @property
    def needs_dense_gradient(self) -> bool:
        return bool(self.cfg.drop_and_grow) and self.growth_rule.dense_gradient is not None

    def _dense_gradient_at(self, grew: bool) -> bool:
        """Whether this step needed the dense weight gradient (FLOPs): the growth rule says when."""
        when = self.growth_rule.dense_gradient
        return (grew and when == "update") or bool(self.cfg.drop_and_grow and when == "step")

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
        grew = self._drop_and_grow_due(t)
        # the step just taken trained with the masks in force until now: observers (FLOPs) count it
        # before this step's update changes them
        dense_gradient = self._dense_gradient_at(grew)
        for observer in self.observers:
            observer.on_step(self, dense_gradient)
        record = None
        if self.schedule is not None and self.schedule.is_event(t):
            target = self.schedule.density_at(t)
            self.prune_to(target)
            record = {"step": t, "target_density": target, "dropped": 0, "grown": 0, "reselected": 0}
        if grew:
            update = self.drop_and_grow(t)
            if record is None:
                record = {"step": t, "target_density": self.density()}
            record.update(dropped=update.dropped, grown=update.grown, reselected=update.reselected)
        if record is not None:
            # counts (and the all-dense shortcut of apply_mask) must reflect the new masks
            # *before* they are applied: a first prune of a dense start is in force at once
            self._refresh()
            record["density"] = self.density()
            self.history.append(record)
        self.apply_mask()
        return record

    def layer_target(self, layer: SparseLayer, density: float) -> float:
        """Per-layer density of the `_uniform` schedule: the classifier keeps a floor."""
        if layer.name == self.classifier:
            return max(density, min(self.cfg.classifier_min_density, 1.0))
        return density

    def prune_to(self, density: float) -> int:
        """Prune to `density` overall (global) or in every layer (uniform), keeping the active weights
        of highest `prune_score` (magnitude by default, as the paper)."""
        rated = [scores.score_of(self.cfg.prune_score, layer.weight, self.optimizer, self.cfg) for layer in self.layers]
        if self.cfg.pruning_schedule == "uniform":
            pruned = sum(
                pruning.prune_layer(layer, kept_count(self.layer_target(layer, density), layer.mask.numel()), score)
                for layer, score in zip(self.layers, rated)
            )
        else:
            pruned = pruning.prune_global(self.layers, round(density * self.total), rated)
        self.sync_masks()
        return pruned

    def planned_density(self, density: float) -> float:
        """Overall density a pruning event to `density` will leave, from the current masks."""
        if self.cfg.pruning_schedule == "uniform":
            kept = sum(
                min(self.active[layer.name], kept_count(self.layer_target(layer, density), layer.mask.numel()))
                for layer in self.layers
            )
        else:
            kept = min(sum(self.active.values()), round(density * self.total))
        return kept / self.total

    def drop_and_grow(self, t: int) -> DropAndGrow:
        """Drop a cosine-decayed fraction of each layer's active weights, regrow as many (see
        `updates.drop_and_grow`: a re-selected weight keeps its value, new connections start at zero)."""
        cfg = self.cfg
        self.drop_fraction = cosine_drop_fraction(t, self.total_steps, cfg.drop_fraction, cfg.drop_fraction_min)
        return updates.drop_and_grow(self, self.drop_fraction)

    # ------------------------------------------------------------------ statistics
    def density(self) -> float:
        return sum(self.active.values()) / self.total

    def nonzero_density(self) -> float:
        """Fraction of the sparse layers' weights that are nonzero: at most `density()` (a mask
        count), below it where a regrown weight's gradient stayed zero (a dead unit)."""
        return sum(counts([layer.weight.detach() != 0 for layer in self.layers])) / self.total

    def layer_densities(self) -> dict[str, float]:
        return {layer.name: self.active[layer.name] / layer.weight.numel() for layer in self.layers}

    def layer_stats(self) -> list[dict[str, Any]]:
        return [
            {
                "name": layer.name,
                "shape": list(layer.weight.shape),
                "numel": layer.weight.numel(),
                "density": self.active[layer.name] / layer.weight.numel(),
            }
            for layer in self.layers
        ]

    def itop_rate(self) -> float:
        """In-time over-parameterisation: fraction of weights ever active so far."""
        return self.itop.rate(self.total)

    def inference_flops_fraction(self) -> float | None:
        return self.flops.meter.inference_fraction(self.layer_densities()) if self.flops else None

    def training_flops_fraction(self) -> float | None:
        return self.flops.meter.training_fraction() if self.flops else None

    def planned_schedule(self) -> list[dict[str, Any]]:
        """Every gradual-pruning event: step and the overall density it leaves."""
        if self.schedule is None:
            return []
        return [
            {"step": t, "density": self.planned_density(self.schedule.density_at(t))} for t in self.schedule.events()
        ]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Keys: step_count, drop_fraction, masks, history, and each observer's `state_key`
        (fired: ITOP, flops: the FLOPs meter or None), as checkpoints always had them."""
        state: dict[str, Any] = {
            "step_count": self.step_count,
            "drop_fraction": self.drop_fraction,
            "masks": {name: m.clone() for name, m in self.masks().items()},
            "history": list(self.history),
            "flops": None,
        }
        for observer in self.observers:
            if observer.state_key:
                state[observer.state_key] = observer.state_dict()
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.drop_fraction = float(state["drop_fraction"])
        for layer in self.layers:
            layer.mask.copy_(state["masks"][layer.name])
        for observer in self.observers:
            if observer.state_key:
                observer.load_state_dict(state.get(observer.state_key))
        self.history = list(state["history"])
        self._refresh()
        self.apply_mask()
