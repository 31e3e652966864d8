#!/usr/bin/env bash
# One short, prepared GPU check (run on a lent CUDA machine, e.g. through the device tool):
# CUDA training end to end through the CLI, AMP + channels_last, the sparse-core tests with
# device auto -> CUDA, and the two CUDA benchmarks. Results land in $OUT (or /tmp/gpu_check).
# Missing pure-Python deps can be carried as wheels in .whl/ (installed to /tmp/site first).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
G="python3 -m granet_cli.cli"
DB="$OUT/gpu.duckdb"
step() { echo; echo "=== $*"; }

for m in granet rigl set gmp dense; do
  step "quickstart $m on cuda"
  $G run experiments/quickstart.yaml --set device=cuda --set sparsity.method=$m --db "$DB" --runs-dir /tmp/runs -q \
    | grep -E "completed|diverged|failed|final test|final density|wall"
done
step "resnet18 synthetic, amp + channels_last, granet"
$G run experiments/quickstart.yaml --set device=cuda --set amp=true --set channels_last=true \
  --set model.name=resnet18 --set data.name=synthetic --set data.train_size=4096 --set data.batch_size=128 \
  --set optim.epochs=4 --set sparsity.final_prune_epoch=3 --set sparsity.update_frequency=8 \
  --db "$DB" --runs-dir /tmp/runs -q | grep -E "completed|failed|final|wall"
step "plan resnet50 (cpu-side)"
$G plan experiments/cifar10_resnet50_granet.yaml --json | python3 -c "import json,sys; p=json.load(sys.stdin); print(p['model'], p['total_params'], round(p['density'],4), len(p['schedule']))"
step "sparse-core and run tests with CUDA visible"
timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests/test_masking.py tests/test_flops.py \
  "tests/test_run.py::test_resume_reproduces_uninterrupted_run" "tests/test_run.py::test_quickstart_completes_with_rows_and_target_density" 2>&1 | tail -5
if [ -f benchmarks/step_overhead.py ]; then step "step_overhead cuda"; timeout 180 python3 benchmarks/step_overhead.py --device cuda 2>&1 | tail -8; fi
if [ -f benchmarks/mask_update.py ]; then step "mask_update cuda"; timeout 180 python3 benchmarks/mask_update.py --device cuda 2>&1 | tail -8; fi
