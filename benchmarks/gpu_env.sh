# Sourced by the GPU scripts (gpu_session.sh, gpu_ladder.sh) with $out set to their output folder:
# creates it and makes $out absolute, moves to the repository root, installs the wheels in .whl/ (the
# pinned transformers, ml_collections, ...: benchmarks/RESULTS.md "Running the GPU half") without
# their dependencies into /tmp/site, and sets the environment.
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "installing .whl/ failed" >&2; exit 2; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3
