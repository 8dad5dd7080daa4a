"""Top-K% masking faithfulness speed at one K, at MM-IMDb shape (the reference's measured anchor).

One "evaluation" of a batch = attention x gradient rollout of the mixture (one forward + backward)
+ 2 identified masked passes (comprehensiveness, sufficiency) + 10 x 2 random passes, i.e. what the
reference times at 18.2 ms per sample on an H200 (fp32, B = 32, text padded to 320, 196 patches,
H = 256, 768-d inputs, 23 labels, multilabel) and 1.55 s per sample on a 2-core CPU (B = 8, 64 text
tokens). The model has random weights (speed does not depend on them); the inputs are random.

Prints one JSON object:

  {"device", "backend", "dtype", "batch_size", "text_len", "patches", "hidden_dim", "input_dim",
   "num_classes", "task", "k", "repeats", "views", "variants", "steps_per_call", "iters",
   "compile_s", "ms_per_sample", "attribution_ms_per_sample", "faithfulness_ms_per_sample",
   "forward_gflop_per_sample", "gflop_per_sample_estimate", "matmul_peak", "tflops", "mfu"}

  python benchmarks/masking_bench.py --batch-size 8 --text-len 64 --iters 2     # CPU, < 2 minutes
  python benchmarks/masking_bench.py                                           # GPU, MM-IMDb shape
  python benchmarks/masking_bench.py --bf16 --steps-per-call 0                  # all variants at once
  python benchmarks/masking_bench.py --expert-wise   # maps of every expert + the mixture (31 variants)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import roofline  # noqa: E402
from flax import nnx  # noqa: E402

from flmoe_jax.explain import MaskingOptions, attribute, faithfulness  # noqa: E402
from flmoe_jax.models import FLI2MoE, ModelConfig  # noqa: E402


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--text-len", type=int, default=320)
  p.add_argument("--patches", type=int, default=196)
  p.add_argument("--hidden-dim", type=int, default=256)
  p.add_argument("--input-dim", type=int, default=768)
  p.add_argument("--num-classes", type=int, default=23)
  p.add_argument("--k", type=float, default=10.0, help="the budget K in percent")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--iters", type=int, default=5, help="timed iterations after one warm-up")
  p.add_argument("--steps-per-call", type=int, default=16, help="masked variants per call; 0 = all")
  p.add_argument("--bf16", action="store_true", help="bfloat16 compute")
  p.add_argument("--expert-wise", action="store_true", help="every expert's map + the mixture")
  args = p.parse_args(argv)

  dtype = jnp.bfloat16 if args.bf16 else jnp.float32
  model = FLI2MoE(
    ModelConfig(
      input_dims=(args.input_dim, args.input_dim),
      num_classes=args.num_classes,
      hidden_dim=args.hidden_dim,
      num_heads=4,
      num_layers=2,
      dtype=dtype,
    ),
    rngs=nnx.Rngs(0),
  )
  rng = np.random.default_rng(0)
  b, t, v = args.batch_size, args.text_len, args.patches
  lens = rng.integers(t // 2, t + 1, size=(b, 1))
  batch = {
    "x": (
      rng.normal(size=(b, t, args.input_dim)).astype(np.float32),
      rng.normal(size=(b, v, args.input_dim)).astype(np.float32),
    ),
    "mask": (np.arange(t)[None] < lens, np.ones((b, v), bool)),
    "label": (rng.random((b, args.num_classes)) < 0.1).astype(np.uint8),
    "weight": np.ones(b, np.float32),
  }
  means = [np.zeros(args.input_dim, np.float32)] * 2
  steps = None if args.steps_per_call == 0 else args.steps_per_call
  expert = None if args.expert_wise else "mixture"
  kinds = ("tokens", "patches")

  def run(key):
    t0 = time.perf_counter()
    attr = attribute(
      model,
      batch,
      method="attnxgrad",
      expert=expert,
      kinds=kinds,
      task_type="multilabel",
      steps_per_call=steps,
    )
    jax.block_until_ready(attr.maps)
    t1 = time.perf_counter()
    res = faithfulness(
      model,
      batch,
      attr,
      key=key,
      means=means,
      options=MaskingOptions(ks=(args.k,), fill="mean", repeats=args.repeats, steps_per_call=steps),
    )
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, res

  # FLOPs: XLA's count of one forward pass of the mixture at this batch, times the passes one
  # evaluation makes (its variants, the clean one included, + 2 for the attribution's backward, which
  # costs about two forwards): an estimate, stated as such in the output.
  graphdef, params = nnx.split(model)
  fwd = jax.jit(lambda st, xs, ms: nnx.merge(graphdef, st)(xs, ms).logits)
  xs = tuple(jnp.asarray(x, dtype) for x in batch["x"])
  fwd_flops = roofline.compiled_cost(fwd.lower(params, xs, batch["mask"]).compile())["flops"]
  peak = roofline.matmul_peak_tflops(dtype)

  t0 = time.perf_counter()
  run(jax.random.key(0))  # compile
  compile_s = time.perf_counter() - t0
  ta, tf = [], []
  for i in range(args.iters):
    a, f, res = run(jax.random.key(i + 1))
    ta.append(a)
    tf.append(f)
  ta, tf = float(np.median(ta)), float(np.median(tf))
  n_views = len(res.views)
  variants = 1 + 2 * n_views + 2 * args.repeats
  flops = fwd_flops * (variants + 2) if fwd_flops else None
  dev = jax.devices()[0]
  print(
    json.dumps(
      {
        "device": getattr(dev, "device_kind", str(dev)),
        "backend": jax.default_backend(),
        "dtype": "bfloat16" if args.bf16 else "float32",
        "batch_size": b,
        "text_len": t,
        "patches": v,
        "hidden_dim": args.hidden_dim,
        "input_dim": args.input_dim,
        "num_classes": args.num_classes,
        "task": "multilabel",
        "k": args.k,
        "repeats": args.repeats,
        "views": list(res.views),
        "variants": variants,
        "steps_per_call": steps,
        "iters": args.iters,
        "compile_s": round(compile_s, 2),
        "ms_per_sample": round(1000 * (ta + tf) / b, 3),
        "attribution_ms_per_sample": round(1000 * ta / b, 3),
        "faithfulness_ms_per_sample": round(1000 * tf / b, 3),
        "forward_gflop_per_sample": fwd_flops / b / 1e9 if fwd_flops else None,
        "gflop_per_sample_estimate": flops / b / 1e9 if flops else None,
        "flop_estimate": "one forward x (variants + 2): the attribution's backward as 2 forwards",
        "matmul_peak": peak,
        **roofline.achieved(flops, ta + tf, peak["tflops"]),
      }
    )
  )


if __name__ == "__main__":
  main()
