"""Sparse CPU inference of an exported model against its dense twin (`granet bench-sparse`,
`granet export --bench`): the CSR versions of Linear and Conv2d (torch has no sparse convolution
kernel, so a conv becomes unfold + CSR matmul), a copy of a model with its sparse layers swapped
in, and the timing of both, whole model and per layer, next to the theoretical FLOPs fraction.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .export import ExportError, Loaded, rebuild_model, run_spec_of


class CSRLinear(nn.Module):
    """y = x W^T + b with W as a torch sparse CSR tensor (torch.sparse.mm)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        y = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], y.shape[-1])


class CSRUnfoldConv2d(nn.Module):
    """Conv2d as im2col (F.unfold) + CSR matmul: torch has no sparse convolution kernel, so this
    is the most direct way to make an unstructured-sparse conv skip its zeros on CPU."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("grouped / non-zero-padded / 'same'-padded convs are kept dense")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.weight = conv.weight.detach().reshape(conv.out_channels, -1).to_sparse_csr()
        self.bias = None if conv.bias is None else conv.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        cols = nn.functional.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, CKK, L)
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        flat = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (CKK, N*L)
        y = torch.sparse.mm(self.weight, flat).reshape(self.out_channels, n, ho * wo).transpose(0, 1)
        if self.bias is not None:
            y = y + self.bias[None, :, None]
        return y.reshape(n, self.out_channels, ho, wo)


def _sparse_module(module: nn.Module) -> nn.Module | None:
    if isinstance(module, nn.Linear):
        return CSRLinear(module)
    if isinstance(module, nn.Conv2d):
        try:
            return CSRUnfoldConv2d(module)
        except ValueError:
            return None
    return None


#: a layer denser than this keeps its dense kernel in the sparse model (CSR cannot pay off there)
DENSE_ABOVE = 0.5


def sparse_copy(model: nn.Module, dense_above: float = DENSE_ABOVE) -> tuple[nn.Module, list[str]]:
    """A copy of `model` with every masked Linear/Conv2d of density <= `dense_above` replaced by
    its CSR version."""
    import copy

    sparse = copy.deepcopy(model)
    replaced = []
    for name, module in list(sparse.named_modules()):
        if not hasattr(module, "weight_mask") or not name:
            continue
        if float(module.weight_mask.float().mean()) > dense_above:
            continue
        new = _sparse_module(module)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(sparse.get_submodule(parent_name) if parent_name else sparse, child, new)
        replaced.append(name)
    return sparse.eval(), replaced


def _time_ms(fn, repeats: int, warmup: int = 2, budget_s: float = 10.0) -> float:
    """Median wall time of one call in milliseconds: `repeats` calls after `warmup`, fewer (at least
    3) when they would take longer than `budget_s` (a slow sparse conv at a large batch)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


@dataclass
class LayerBench:
    name: str
    kind: str
    shape: list[int]
    density: float
    macs: int  # dense multiply-adds per sample
    dense_ms: float
    sparse_ms: float

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms if self.sparse_ms > 0 else float("nan")


@dataclass
class BenchResult:
    model: str
    batch_size: int
    threads: int
    input_shape: list[int]
    dense_ms: float
    sparse_ms: float
    flops_fraction: float  # active MACs / dense MACs over the masked layers (inference)
    max_abs_diff: float
    layers: list[LayerBench] = field(default_factory=list)
    kept_dense: list[str] = field(default_factory=list)
    db_inference_flops_frac: float | None = None

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms if self.sparse_ms > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "layers"}
        d["speedup"] = self.speedup
        d["layers"] = [{**layer.__dict__, "speedup": layer.speedup} for layer in self.layers]
        return d


def _dataset_info(spec):
    from .data import DataError, dataset_info

    try:
        return dataset_info(**spec.data.model_dump())
    except DataError as e:
        raise ExportError(str(e)) from None


def _num_classes(state: dict[str, Tensor], default: int) -> int:
    """The classifier's rows are the true class count (ImageNet folders may differ)."""
    head = [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
    return head[-1].shape[0] if head else default


def _masked_layer_io(model: nn.Module, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One forward pass of `x`: the input and output of every masked layer, by module name."""
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if hasattr(module, "weight_mask") and name:

            def hook(mod, args, out, name=name):
                inputs[name], outputs[name] = args[0].detach(), out.detach()

            hooks.append(module.register_forward_hook(hook))
    model(x)
    for h in hooks:
        h.remove()
    return inputs, outputs


def _bench_layers(
    model: nn.Module,
    sparse: nn.Module,
    replaced: list[str],
    inputs: dict[str, Tensor],
    outputs: dict[str, Tensor],
    repeats: int,
) -> tuple[list[LayerBench], int, float]:
    """Each replaced layer timed dense vs sparse on its recorded input, and the dense and active
    multiply-adds per sample over every masked layer."""
    layers, dense_macs, active_macs = [], 0, 0.0
    for name, module in model.named_modules():
        if name not in inputs:
            continue
        mask = module.weight_mask
        density = float(mask.float().mean())
        positions = outputs[name][0, 0].numel() if isinstance(module, nn.Conv2d) else 1
        macs = module.weight.numel() * positions
        dense_macs += macs
        active_macs += density * macs
        if name not in replaced:
            continue
        smod = sparse.get_submodule(name)
        inp = inputs[name]
        layers.append(
            LayerBench(
                name=name,
                kind=type(module).__name__,
                shape=list(module.weight.shape),
                density=density,
                macs=macs,
                dense_ms=_time_ms(lambda m=module, x=inp: m(x), repeats),
                sparse_ms=_time_ms(lambda m=smod, x=inp: m(x), repeats),
            )
        )
    return layers, dense_macs, active_macs


@torch.inference_mode()
def bench(
    loaded: Loaded,
    *,
    batch_size: int = 64,
    repeats: int = 20,
    threads: int | None = None,
    overrides: list[str] | None = None,
) -> BenchResult:
    """Dense vs CSR-sparse CPU inference of an exported model, whole model and per masked layer.

    The dense model runs torch's dense kernels (MKL / oneDNN) on the masked weights; the sparse
    model replaces every masked Linear by a CSR matmul and every masked Conv2d by unfold + CSR
    matmul, except layers denser than DENSE_ABOVE (kept dense, as one would deploy them). The
    input is random (timing does not depend on the values); outputs are compared."""
    if batch_size < 1 or repeats < 1:
        raise ExportError("--batch-size and --repeats must be >= 1")
    spec = run_spec_of(loaded.sidecar, overrides)
    info = _dataset_info(spec)
    num_classes = _num_classes(loaded.state, info.num_classes)
    if threads:
        torch.set_num_threads(threads)
    model = rebuild_model(spec, loaded.state, num_classes, info.input_shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *info.input_shape, generator=gen)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        inputs, outputs = _masked_layer_io(model, x)
        sparse, replaced = sparse_copy(model)
        diff = float((model(x) - sparse(x)).abs().max())
        dense_ms = _time_ms(lambda: model(x), repeats)
        sparse_ms = _time_ms(lambda: sparse(x), repeats)
        layers, dense_macs, active_macs = _bench_layers(model, sparse, replaced, inputs, outputs, repeats)
    kept_dense = [n for n in inputs if n not in replaced]  # denser than DENSE_ABOVE, or a grouped conv
    db_frac = (loaded.sidecar.get("metrics") or {}).get("inference_flops_frac")
    return BenchResult(
        model=spec.model.name,
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        input_shape=list(info.input_shape),
        dense_ms=dense_ms,
        sparse_ms=sparse_ms,
        flops_fraction=active_macs / dense_macs if dense_macs else 1.0,
        max_abs_diff=diff,
        layers=layers,
        kept_dense=kept_dense,
        db_inference_flops_frac=db_frac,
    )


CONV_NOTE = (
    "torch has no sparse convolution kernel for unstructured masks (torch.sparse offers CSR/COO "
    "matmul; semi-structured 2:4 sparsity needs CUDA and a 2:4 pattern, which GraNet's masks are "
    "not): sparse convs here are unfold + CSR matmul, against oneDNN's dense conv."
)
