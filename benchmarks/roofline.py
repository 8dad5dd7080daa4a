"""What bounds a benchmarked program: its FLOPs and memory as XLA counts them, and the device's
matmul peak measured in the same run (so a step's achieved TFLOP/s and MFU are against this device,
not a datasheet).

Used by train_bench.py and masking_bench.py; not a benchmark itself.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def compiled_cost(compiled) -> dict:
  """FLOPs, bytes accessed and the memory plan of one compiled program (`jit(f).lower(...).compile()`).

  XLA's cost analysis counts a dot of [M, K] x [K, N] as 2 M N K and elementwise ops as one FLOP per
  element; a loop body is counted once (the programs measured here have no loops on the step's path).

  Returns:
    {"flops", "bytes_accessed", "memory": {"argument_bytes", "output_bytes", "temp_bytes",
    "alias_bytes", "planned_peak_bytes"} or None}.
  """
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):  # older JAX: one dict per device program
    ca = ca[0] if ca else {}
  ca = ca or {}
  out = {
    "flops": float(ca["flops"]) if "flops" in ca else None,
    "bytes_accessed": float(ca["bytes accessed"]) if "bytes accessed" in ca else None,
    "memory": None,
  }
  ma = compiled.memory_analysis()
  if ma is not None:
    mem = {
      "argument_bytes": int(ma.argument_size_in_bytes),
      "output_bytes": int(ma.output_size_in_bytes),
      "temp_bytes": int(ma.temp_size_in_bytes),
      "alias_bytes": int(ma.alias_size_in_bytes),
    }
    # Arguments + outputs + scratch, less the outputs written in place of donated arguments.
    mem["planned_peak_bytes"] = (
      mem["argument_bytes"] + mem["output_bytes"] + mem["temp_bytes"] - mem["alias_bytes"]
    )
    out["memory"] = mem
  return out


def device_peak_bytes() -> int | None:
  """The device allocator's peak bytes in use so far (GPU / TPU), or None where it keeps no stats."""
  stats = jax.devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def matmul_peak_tflops(dtype, n: int | None = None, iters: int = 10) -> dict:
  """The device's achieved dense matmul rate: the median of `iters` timed [n, n] x [n, n] products.

  Args:
    dtype: the compute dtype (float32 or bfloat16).
    n: matrix size; default 8192 on an accelerator, 2048 on a CPU.
    iters: timed products after one warm-up.

  Returns:
    {"dtype", "n", "tflops"}.
  """
  if n is None:
    n = 2048 if jax.default_backend() == "cpu" else 8192
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, b))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(mm(a, b))
    times.append(time.perf_counter() - t)
  return {
    "dtype": jnp.dtype(dtype).name,
    "n": n,
    "tflops": 2 * n**3 / float(np.median(times)) / 1e12,
  }


def achieved(flops: float | None, seconds: float, peak_tflops: float) -> dict:
  """Achieved TFLOP/s of `flops` done in `seconds`, and its share of the measured peak (MFU)."""
  if not flops:
    return {"tflops": None, "mfu": None}
  tflops = flops / seconds / 1e12
  return {"tflops": round(tflops, 4), "mfu": round(tflops / peak_tflops, 4)}


def median_seconds(fn, n: int) -> float:
  """Median wall time of `n` calls of `fn` after one warm-up call, each waited for."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(n):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))
