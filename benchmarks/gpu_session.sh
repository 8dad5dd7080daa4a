#!/usr/bin/env bash
# The GPU half of the speed measurements in one command, on a machine whose Python has JAX, flax,
# optax, orbax and torch but not this project's pinned transformers (the Flax classes left
# transformers in 5.x) nor ml_collections:
#
#   bash benchmarks/gpu_session.sh OUT_DIR
#
# Wheels in .whl/ (downloaded on a networked machine, see benchmarks/RESULTS.md "Running the GPU
# half") are installed first, without their dependencies, into /tmp/site. Every benchmark of
# run_all.sh then runs; their JSON goes to OUT_DIR/results.jsonl (one object per benchmark, or its
# error) and the raw files to OUT_DIR/gpu_results.tgz: two files, whatever the number of benchmarks.
set -u
out=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR}
source "$(dirname "$0")/gpu_env.sh"
export PYTHON=python3
work=$(mktemp -d /tmp/flmoe-gpu-XXXX)
python3 -c "import jax, transformers, flax; print('jax', jax.__version__, jax.devices(), \
'transformers', transformers.__version__, 'flax', flax.__version__)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
RUN_ALL_BUDGET=${RUN_ALL_BUDGET:-420} bash benchmarks/run_all.sh "$work" 2>&1 | tee "$work/run_all.log"
for f in "$work"/*.json; do
  python3 - "$f" <<'PY' >> "$out/results.jsonl"
import json, pathlib, sys
p = pathlib.Path(sys.argv[1])
try:
  body = json.loads(p.read_text())
except ValueError:
  err = p.with_suffix(".err")
  body = {"error": (err.read_text()[-1500:] if err.exists() else "no output")}
print(json.dumps({"benchmark_file": p.stem, **(body if isinstance(body, dict) else {"result": body})}))
PY
done
tar czf "$out/gpu_results.tgz" -C "$work" .
echo "results: $out/results.jsonl, $out/gpu_results.tgz"
