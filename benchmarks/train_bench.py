"""Training and inference throughput of FL-I2MoE and the dense baseline at MM-IMDb shape.

Prints one JSON object. The reference anchors (the authors' PyTorch classes timed on one H200): FL-I2MoE training 296.5
samples/s fp32 (392 with bf16 autocast), inference 2,751 samples/s, dense training 3,133 samples/s; on a
2-core CPU (fp32, B = 8, 64 text tokens) training 1.16 samples/s.

  python benchmarks/train_bench.py                       # MM-IMDb shape: B 32, text 320, 196 patches, H 256
  python benchmarks/train_bench.py --text-len 64 --batch 8 --steps 3   # the CPU anchor's shape
  python benchmarks/train_bench.py --objectives role,role+noise --models fl_i2moe --dtypes float32 \
      --batch 64 --text-len 24 --patches 16 --dim 32 --hidden 32 --classes 2   # L2 synthetic shape

Objectives (FL-I2MoE): `paper` (interaction losses, weight 0.5: the noise passes run), `role` (the
synthetic config's: role consistency, missing-modality and decorrelation terms, interaction weight 0,
so the step skips the noise passes), `role+noise` (the same with the noise passes forced by a
negligible interaction weight: what the role step cost before it skipped them).
"""

from __future__ import annotations

import argparse
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import roofline
from flax import nnx

from flmoe_jax import train
from flmoe_jax.models import DenseTransformer, FLI2MoE, ModelConfig


def _batch(args, rng):
  text = rng.normal(size=(args.batch, args.text_len, args.dim)).astype(np.float32)
  image = rng.normal(size=(args.batch, args.patches, args.dim)).astype(np.float32)
  lens = rng.integers(args.text_len // 2, args.text_len + 1, size=(args.batch, 1))
  return {
    "x": (text, image),
    "mask": (np.arange(args.text_len)[None] < lens, np.ones((args.batch, args.patches), bool)),
    "label": (rng.random((args.batch, args.classes)) < 0.2).astype(np.uint8),
    "weight": np.ones(args.batch, np.float32),
  }


_OBJECTIVES = {
  "paper": dict(lambda_int=0.5),
  "role": dict(lambda_int=0.0, lambda_role=1.0, lambda_missing=1.0, lambda_decor=1.0),
  "role+noise": dict(lambda_int=1e-12, lambda_role=1.0, lambda_missing=1.0, lambda_decor=1.0),
}


def bench(kind: str, dtype: str, objective: str, args, peak: float) -> dict:
  rng = np.random.default_rng(0)
  batch = jax.device_put(_batch(args, rng))
  cfg = ModelConfig(
    input_dims=(args.dim, args.dim),
    num_classes=args.classes,
    hidden_dim=args.hidden,
    num_heads=4,
    num_layers=2,
    dropout=0.5,
    dtype=dtype,
  )
  model = (FLI2MoE if kind == "fl_i2moe" else DenseTransformer)(cfg, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  step = jax.jit(
    functools.partial(
      train.train_step,
      graphdef=graphdef,
      dtype=jnp.dtype(dtype),
    ),
    donate_argnums=(0,),
  )
  key = jax.random.key(0)
  holder = {"state": state}
  fill_means = [jnp.zeros(args.dim, jnp.float32)] * 2 if objective != "paper" else None
  weights = train.Objective(task_type="multilabel", **_OBJECTIVES[objective])
  # Compiled once up front: the same program is timed and its FLOPs and memory plan read.
  compiled = step.lower(state, batch, key, weights, fill_means).compile()
  cost = roofline.compiled_cost(compiled)

  def one_step():
    holder["state"], m = compiled(holder["state"], batch, key, weights, fill_means)
    return m["loss"]

  t_train = roofline.median_seconds(one_step, args.steps)
  infer = jax.jit(functools.partial(train.eval_step, graphdef=graphdef, dtype=jnp.dtype(dtype)))
  t_inf = roofline.median_seconds(lambda: infer(holder["state"], batch)[0], args.steps)
  return {
    "model": kind,
    "dtype": dtype,
    "objective": objective if kind == "fl_i2moe" else None,
    "train_samples_per_s": args.batch / t_train,
    "train_step_ms": 1e3 * t_train,
    "train_step_tflop": cost["flops"] / 1e12 if cost["flops"] else None,
    **{f"train_{k}": v for k, v in roofline.achieved(cost["flops"], t_train, peak).items()},
    "train_memory_plan": cost["memory"],
    "inference_samples_per_s": args.batch / t_inf,
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--text-len", type=int, default=320)
  p.add_argument("--patches", type=int, default=196)
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--classes", type=int, default=23)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--models", default="fl_i2moe,dense")
  p.add_argument(
    "--objectives", default="paper", help=f"FL-I2MoE objectives, from {list(_OBJECTIVES)}"
  )
  args = p.parse_args()
  dtypes = args.dtypes.split(",")
  # The device's dense matmul rate in each dtype, measured here: the MFU denominators.
  peaks = {dt: roofline.matmul_peak_tflops(jnp.dtype(dt)) for dt in dtypes}
  rows = [
    bench(kind, dt, obj, args, peaks[dt]["tflops"])
    for kind in args.models.split(",")
    for dt in dtypes
    for obj in (args.objectives.split(",") if kind == "fl_i2moe" else ["paper"])
  ]
  print(
    json.dumps(
      {
        "benchmark": "train_step",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "shape": {
          "batch": args.batch,
          "text_len": args.text_len,
          "patches": args.patches,
          "dim": args.dim,
          "hidden": args.hidden,
          "classes": args.classes,
        },
        "matmul_peak": list(peaks.values()),
        "device_peak_bytes": roofline.device_peak_bytes(),
        "timing": f"median of {args.steps} steps after one warm-up step",
        "results": rows,
      },
      indent=1,
    )
  )


if __name__ == "__main__":
  main()
