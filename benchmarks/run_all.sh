#!/usr/bin/env bash
# Runs every benchmark on the current default JAX device and writes one JSON file per benchmark into
# OUT_DIR (default: benchmarks/out). Each benchmark is independent: one failing does not stop the rest.
#   bash benchmarks/run_all.sh [OUT_DIR]           (RUN_ALL_BUDGET=480: stop starting after 8 minutes)
set -u
out=${1:-benchmarks/out}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
# RUN_ALL_BUDGET=S: start no benchmark after S seconds, and stop any at S + 60 (a leased device's
# time is short; the list is in order of what matters most). 0 or unset: no limit.
budget=${RUN_ALL_BUDGET:-0}
run() {  # name, then the command
  local name=$1; shift
  if (( budget > 0 && SECONDS >= budget )); then
    echo "== $name: skipped (RUN_ALL_BUDGET=$budget s spent)"; return
  fi
  echo "== $name: $*"
  local t0=$SECONDS
  local limit=()
  (( budget > 0 )) && limit=(timeout $(( budget + 60 - SECONDS )))
  if "${limit[@]}" "$@" > "$out/$name.json" 2> "$out/$name.err"; then
    echo "   ok in $((SECONDS - t0)) s"; cat "$out/$name.json"
  else
    echo "   FAILED in $((SECONDS - t0)) s"; tail -n 20 "$out/$name.err"
  fi
}
$py -c "import jax; print('devices:', jax.devices())"
run train_fp32_bf16 $py benchmarks/train_bench.py --steps 20
run masking_fp32 $py benchmarks/masking_bench.py --iters 5
run masking_bf16 $py benchmarks/masking_bench.py --iters 5 --bf16
run probe_fp32 $py benchmarks/probe_bench.py --coalitions-per-call 2048 --calls 10 --examples 16
run probe_bf16 $py benchmarks/probe_bench.py --coalitions-per-call 2048 --calls 10 --dtype bfloat16 --examples 16
run probe_bf16_xla $py benchmarks/probe_bench.py --coalitions-per-call 2048 --calls 10 --dtype bfloat16 --examples 16 --attention xla
run probe_bf16_cudnn $py benchmarks/probe_bench.py --coalitions-per-call 2048 --calls 10 --dtype bfloat16 --examples 16 --attention cudnn
# The encoders alone against HF PyTorch (sdpa) with the same weights, in one process (torch needed).
run encoder_roberta_bf16 $py benchmarks/encoder_bench.py --model roberta-base --seq-len 320 --batch-size 64 --bf16 --attention einsum,xla,cudnn --torch
run encoder_clip_bf16 $py benchmarks/encoder_bench.py --model clip-vit-b16 --batch-size 64 --bf16 --attention einsum,xla,cudnn --torch
run extract_image_bf16_cudnn $py benchmarks/extract_bench.py --which image --batch-size 128 --batches 10 --bf16 --attention cudnn
run extract_image_fp32 $py benchmarks/extract_bench.py --which image --batch-size 128 --batches 10
run extract_image_bf16 $py benchmarks/extract_bench.py --which image --batch-size 128 --batches 10 --bf16
# Seeds side by side vs one after the other (compilation included; the store is generated on first use).
run vmap_seeds $py benchmarks/vmap_seeds_bench.py --config configs/synthetic.py:demo --seeds 0,1,2 \
  --set store=runs/stores/synthetic --set train.epochs=2 --set train.prng_impl=threefry2x32
