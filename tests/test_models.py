"""Model registry: shapes, parameter counts (computed independently), init and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from granet_cli.models import MODEL_NAMES, ModelError, build_model

CIFAR_MODELS = ["mlp", "lenet5", "resnet18", "resnet32", "resnet50", "vgg16", "vgg19", "wrn16_8", "resnet50_imagenet"]


def build(name: str, num_classes: int = 10, shape=(3, 32, 32), fan_in: bool = False) -> nn.Module:
    return build_model(name, num_classes, shape, fan_in_init=fan_in)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def test_registry_names():
    assert set(MODEL_NAMES) == {
        "mlp",
        "lenet5",
        "resnet18",
        "resnet32",
        "resnet50",
        "vgg16",
        "vgg19",
        "wrn28_10",
        "wrn16_8",
        "resnet50_imagenet",
    }


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_forward_shape(name):
    torch.manual_seed(0)
    model = build(name)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet18", "resnet32", "vgg16", "wrn16_8"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_small_and_grey_inputs(name, shape):
    model = build(name, num_classes=7, shape=shape).eval()
    with torch.no_grad():
        assert model(torch.randn(3, *shape)).shape == (3, 7)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_last_linear_is_classifier(name):
    model = build(name, num_classes=13)
    assert last_linear(model).out_features == 13


def test_mlp_param_count():
    expected = 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert n_params(build("mlp", shape=(1, 8, 8))) == expected
    expected_cifar = 3072 * 256 + 256 + 256 * 128 + 128 + 128 * 100 + 100
    assert n_params(build("mlp", num_classes=100)) == expected_cifar


@pytest.mark.parametrize("shape,flat", [((1, 8, 8), 16 * 2 * 2), ((1, 28, 28), 16 * 7 * 7), ((3, 32, 32), 16 * 8 * 8)])
def test_lenet5_param_count(shape, flat):
    c = shape[0]
    convs = (c * 6 * 25 + 6) + (6 * 16 * 25 + 16)
    fcs = (flat * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert n_params(build("lenet5", shape=shape)) == convs + fcs


def _basic_block(cin: int, cout: int) -> int:
    count = 9 * cin * cout + 9 * cout * cout + 2 * 2 * cout
    if cin != cout:  # 1x1 conv + BN projection
        count += cin * cout + 2 * cout
    return count


def test_resnet32_param_count():
    expected = 3 * 16 * 9 + 2 * 16
    cin = 16
    for width in (16, 32, 64):
        for _ in range(5):
            expected += _basic_block(cin, width)
            cin = width
    expected += 64 * 10 + 10
    assert n_params(build("resnet32")) == expected
    assert 0.46e6 < expected < 0.47e6  # the classic ResNet-32 size


def test_resnet50_cifar_size_and_stem():
    model = build("resnet50")
    assert 23.4e6 < n_params(model) < 23.6e6
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1) and first_conv.out_channels == 64
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert last_linear(model).in_features == 2048
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 1 + 3 * 16 + 4  # stem, bottlenecks, projections


def test_resnet18_cifar_size():
    assert 11.1e6 < n_params(build("resnet18")) < 11.2e6


@pytest.mark.parametrize(
    "name,cfg",
    [
        ("vgg16", [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]),
        ("vgg19", [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]),
    ],
)
def test_vgg_param_count(name, cfg):
    expected, cin = 0, 3
    for v in cfg:
        if v != "M":
            expected += 9 * cin * v + 2 * v  # bias-free conv + BN
            cin = v
    expected += 512 * 10 + 10
    model = build(name)
    assert n_params(model) == expected
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == sum(v != "M" for v in cfg)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == cfg.count("M")


def _wrn_count(depth: int, k: int, num_classes: int = 10) -> int:
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total, cin = 3 * 16 * 9, 16
    for w in widths[1:]:
        for _ in range(n):
            total += 2 * cin + 9 * cin * w + 2 * w + 9 * w * w  # bn1, conv1, bn2, conv2
            if cin != w:
                total += cin * w
            cin = w
    return total + 2 * cin + cin * num_classes + num_classes


@pytest.mark.parametrize("name,depth,k,approx", [("wrn28_10", 28, 10, 36.5e6), ("wrn16_8", 16, 8, 11.0e6)])
def test_wrn_param_count(name, depth, k, approx):
    count = n_params(build(name))
    assert count == _wrn_count(depth, k)
    assert abs(count - approx) / approx < 0.01


def test_resnet50_imagenet_is_torchvision_resnet50():
    # the published torchvision ResNet-50 size with 1000 classes
    assert n_params(build("resnet50_imagenet", num_classes=1000, shape=(3, 224, 224))) == 25_557_032
    model = build("resnet50_imagenet", num_classes=10, shape=(3, 224, 224))
    assert n_params(model) == 25_557_032 - 2048 * 990 - 990


def test_fan_in_init_std():
    torch.manual_seed(0)
    model = build("resnet50", fan_in=True)
    conv = model.layer4[0].conv2  # 512x512x3x3: 2.4M weights
    fan_in = conv.in_channels * 3 * 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    assert conv.weight.mean().abs().item() < 1e-3

    vgg = build("vgg19", fan_in=True)
    fc = last_linear(vgg)
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert torch.count_nonzero(fc.bias) == 0
    # without the flag the reference init is used (Linear ~ N(0, 0.01)), so the flag matters
    assert last_linear(build("vgg19")).weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_fan_in_init_zeroes_biases():
    mlp = build("mlp", shape=(1, 8, 8), fan_in=True)
    for m in mlp.modules():
        if isinstance(m, nn.Linear):
            assert torch.count_nonzero(m.bias) == 0
    big = [m for m in mlp.modules() if isinstance(m, nn.Linear)][1]  # 256 -> 128
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.05)


def test_unknown_name():
    with pytest.raises(ModelError) as exc:
        build("resnet9000")
    msg = str(exc.value)
    assert "\n" not in msg and "resnet9000" in msg
    for name in MODEL_NAMES:
        assert name in msg
    assert isinstance(exc.value, ValueError)


def test_backward_reaches_every_weight():
    model = build("resnet32")
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
