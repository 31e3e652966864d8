"""Masks, weights and momentum stay identical on every DDP rank even when ranks' random streams differ."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from granet_cli.sparse.masking import Masking
from granet_cli.sparse.methods import SparseConfig


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # deliberately different RNG on each rank
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    net = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = SparseConfig(method="set", final_density=0.2, update_frequency=3)  # random growth
    masking = Masking(model, opt, cfg, steps_per_epoch=10, epochs=3)
    checks = 0
    for step in range(30):
        x, y = torch.randn(8, 20), torch.randint(0, 5, (8,))
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        if masking.step() is not None or step == 0:
            for layer in masking.layers:
                mine = layer.mask.to(torch.uint8)
                gathered = [torch.zeros_like(mine) for _ in range(world)]
                dist.all_gather(gathered, mine)
                assert all(torch.equal(g, gathered[0]) for g in gathered), f"masks differ at step {step}"
                assert torch.all(layer.weight[~layer.mask] == 0)
                # weights and momentum too: a re-selected connection keeps its value on every rank
                for tensor in (layer.weight.detach(), opt.state[layer.weight]["momentum_buffer"]):
                    values = [torch.zeros_like(tensor) for _ in range(world)]
                    dist.all_gather(values, tensor.contiguous())
                    assert all(torch.equal(v, values[0]) for v in values), f"values differ at step {step}"
            checks += 1
    if rank == 0:
        torch.save({"checks": checks}, result_path)
    dist.destroy_process_group()


def test_masks_identical_across_two_ranks(tmp_path):
    out = tmp_path / "result.pt"
    mp.start_processes(_worker, args=(2, _port(), str(out)), nprocs=2, start_method="spawn", join=True)
    assert torch.load(out)["checks"] >= 10
