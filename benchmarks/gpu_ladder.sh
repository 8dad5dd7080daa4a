#!/usr/bin/env bash
# The rungs of the ground-truth ladder that a 2-core CPU cannot train in a session, in one command on
# a GPU machine (same Python set-up as gpu_session.sh: wheels in .whl/ installed without their
# dependencies into /tmp/site):
#
#   bash benchmarks/gpu_ladder.sh OUT_DIR
#
# Jobs run side by side on the one GPU (a small model's step is mostly launch time, so they
# interleave), each capped at LADDER_BUDGET seconds (default 470):
#   L3 mixed,      20,000 examples, FL-I2MoE, 3 model seeds side by side, 40 epochs, probes
#   L3 synergy,    10,000 examples, FL-I2MoE, 3 model seeds, 30 epochs, probes
#   L3 redundancy, 10,000 examples, FL-I2MoE, 3 model seeds, 30 epochs, probes
#   L4 mixed,      20,000 examples, MLP and dense anchors, then FL-I2MoE (30 epochs, probes)
# The recipe is docs/ground_truth.md's `ra1` (learned positions, gate frozen for the first 45% of
# training, the extra terms from 60%, lambda_red_alone = 1). Output: OUT_DIR/results.jsonl (the
# ladder's rows) and OUT_DIR/ladder_logs.tgz (each job's stderr, every run's metrics.jsonl and
# probe reports: what a job stopped by its cap had reached).
set -u
out=${1:?usage: bash benchmarks/gpu_ladder.sh OUT_DIR}
budget=${LADDER_BUDGET:-470}
source "$(dirname "$0")/gpu_env.sh"
# Why: five processes share the GPU; the default preallocation (75% each) would not fit.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
root=$(mktemp -d /tmp/flmoe-ladder-XXXX)
python3 -c "import jax, flax, orbax.checkpoint as o; print('jax', jax.__version__, jax.devices(), \
'flax', flax.__version__, 'orbax', o.__version__)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

recipe=(--set model.position=learned --set optim.gate_warmup_steps=0
  --set optim.gate_warmup_fraction=0.45 --set loss.extra_start_fraction=0.6
  --set loss.lambda_red_alone=1 --tag ra1)
probe=(--pairs topk --probe-samples 100)
start=$(date +%s)
ladder() {  # ladder NAME ARGS...: one job in the background, its rows in $root/NAME.jsonl
  local name=$1 left=$((budget - ($(date +%s) - start)))
  shift
  timeout "$left" python3 benchmarks/ground_truth_ladder.py --root "$root" "$@" \
    > "$root/$name.jsonl" 2> "$root/$name.err" &
}
ladder l3_mixed_20k --rungs L3 --settings mixed --models fl_i2moe --n-train 20000 --epochs 40 \
  --model-seeds 3 "${probe[@]}" "${recipe[@]}"
ladder l3_synergy_10k --rungs L3 --settings synergy --models fl_i2moe --n-train 10000 \
  --epochs 30 --model-seeds 3 "${probe[@]}" "${recipe[@]}"
ladder l3_redundancy_10k --rungs L3 --settings redundancy --models fl_i2moe --n-train 10000 \
  --epochs 30 --model-seeds 3 "${probe[@]}" "${recipe[@]}"
ladder l4_anchors --rungs L4 --settings mixed --models mlp,dense --n-train 20000 --epochs 30 \
  --set model.position=learned --tag learned30
anchors=$!
# The FL-I2MoE job waits for the anchors' job to have written the shared L4 store.
(
  until [ -f "$root/stores/L4_mixed_n20000_s0/manifest.json" ]; do
    kill -0 "$anchors" 2> /dev/null || exit 0  # that job stopped without the store
    sleep 2
  done
  ladder l4_fl_i2moe --rungs L4 --settings mixed --models fl_i2moe --n-train 20000 --epochs 30 \
    --pairs topk --probe-samples 50 "${recipe[@]}"
  wait
) &
wait
echo "jobs done after $(($(date +%s) - start)) s"
cat "$root"/*.jsonl | grep "^{" > "$out/results.jsonl"
(cd "$root" && find . -name '*.err' -o -name metrics.jsonl -o -path '*/probe/*.json' \
  | tar czf "$out/ladder_logs.tgz" -T -)
tail -n 3 "$root"/*.err
echo "results: $out/results.jsonl, $out/ladder_logs.tgz"
