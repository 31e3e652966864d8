"""FLOPs accounting on hand-countable networks."""

import pytest
import torch
from torch import nn

from granet_cli.sparse.flops import FlopsMeter, layer_macs
from granet_cli.sparse.masking import Masking
from granet_cli.sparse.methods import SparseConfig


def test_layer_macs_hand_counted():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(50, 4), nn.ReLU(), nn.Linear(4, 3))
    macs = layer_macs(net, torch.zeros(7, 1, 5, 5))
    # conv: 2 out channels x 25 positions x (1*3*3) = 450; linear: 50*4 = 200; 4*3 = 12
    assert macs == {"0.weight": 450, "2.weight": 200, "4.weight": 12}


def test_inference_and_training_fraction_of_two_layer_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    cfg = SparseConfig(method="rigl", final_density=0.5, sparse_init="uniform", update_frequency=2)
    x = torch.randn(8, 4)
    y = torch.randint(0, 2, (8,))
    masking = Masking(net, opt, cfg, steps_per_epoch=3, epochs=2, sample_input=x)
    d1 = int(net[0].weight_mask.sum()) / 12  # round(0.5*12) = 6
    d2 = int(net[2].weight_mask.sum()) / 6  # 3
    assert (d1, d2) == (0.5, 0.5)
    f_dense = 12 + 6
    f_sparse = 12 * d1 + 6 * d2
    assert masking.inference_flops_fraction() == pytest.approx(f_sparse / f_dense)
    for _ in range(6):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        masking.step()
    # 6 steps, updates (dense gradient) at steps 2, 4, 6: 3 x (2 fS + fD) + 3 x 3 fS
    want = (3 * (2 * f_sparse + f_dense) + 3 * 3 * f_sparse) / (6 * 3 * f_dense)
    assert masking.training_flops_fraction() == pytest.approx(want)


def test_meter_gmp_style_decreasing_density():
    meter = FlopsMeter({"a": 100, "b": 50})
    meter.add_step(meter.sparse_forward({"a": 1.0, "b": 1.0}), False)
    meter.add_step(meter.sparse_forward({"a": 0.5, "b": 0.2}), False)
    assert meter.training_fraction() == pytest.approx((3 * 150 + 3 * 60) / (2 * 3 * 150))
    assert meter.inference_fraction({"a": 0.1}) == pytest.approx((10 + 50) / 150)


@pytest.mark.parametrize("method", ["gmp", "granet", "rigl"])
def test_each_step_is_charged_at_the_density_it_trained_with(method):
    """Independent step-by-step sum: the masks in force during a step's forward/backward (read before
    `masking.step()`) set its cost; a pruning event at that step only affects later steps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    spe, epochs, dT = 4, 5, 2
    cfg = SparseConfig(method=method, final_density=0.1, update_frequency=dT, init_prune_epoch=1, final_prune_epoch=4)
    x, y = torch.randn(8, 20), torch.randint(0, 10, (8,))
    masking = Masking(net, opt, cfg, steps_per_epoch=spe, epochs=epochs, sample_input=x)
    macs = [20 * 30, 30 * 10]  # multiply-adds per sample of each Linear
    dense = sum(macs)
    total = 0.0
    for t in range(1, spe * epochs + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        f_s = sum(m * int(layer.weight_mask.sum()) / layer.weight.numel() for m, layer in zip(macs, (net[0], net[2])))
        update = method != "gmp" and t % dT == 0 and (method == "rigl" or t >= spe)
        total += 2 * f_s + dense if update else 3 * f_s
        masking.step()
    assert masking.training_flops_fraction() == pytest.approx(total / (3 * dense * spe * epochs), rel=1e-12)
