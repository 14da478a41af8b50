#!/bin/bash
# Smoke-run experiments on a GPU host that has jax but no network (the lent device machine).
# Prepare the missing pure-Python/binary deps here first, then carry `.whl` along:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       ml_collections jraph nilearn nibabel dipy trx-python gplearn pyoperon
# Usage on the GPU host, from the repo root: bash tools/gpu_smoke.sh [experiment ...]
# Each experiment's log lands in $OUT (default /tmp/gpu_smoke); a crash prints the Python stack.
# With jax 0.11.2, run edgc with JAX_USE_SHARDY_PARTITIONER=false (XLA:CPU Shardy segfault, see README).
set -u
OUT=${OUT:-/tmp/gpu_smoke}; mkdir -p "$OUT"
python -m pip install --no-deps -q .whl/*.whl 2>&1 | grep -v WARNING | tail -3
export PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':')experiments
export PYTHONFAULTHANDLER=1
python -c "import jax; print('jax', jax.__version__, jax.devices())"
exps=("$@"); [ ${#exps[@]} -eq 0 ] && exps=($(ls -d experiments/*/config.py | cut -d/ -f2))
for exp in "${exps[@]}"; do
  s=$(date +%s)
  timeout 300 python "experiments/$exp/main.py" --config="experiments/$exp/config.py:smoke" \
    --workdir="$OUT/$exp" > "$OUT/$exp.log" 2>&1
  echo "== $exp rc=$? $(( $(date +%s) - s ))s"
done
