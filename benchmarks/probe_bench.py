"""Probe throughput: coalition (expert) evaluations per second at the MM-IMDb shape.

One FL-I2MoE expert (random weights: speed does not depend on the values) on one example with
text 320 tokens (incl. `<s>`) + 196 image patches (L = 516), H = 256, 2 layers, 4 heads, MLP 2H;
players = the 319 + 196 = 515 candidate tokens. Prints one JSON object:

  {"device", "backend", "dtype", "attention", "L", "H", "n_players", "coalitions_per_call",
   "value_fn": {"coalitions", "seconds", "expert_evals_per_s"},
   "mc_kernel": {"examples", "pairs", "draws", "coalitions", "seconds", "expert_evals_per_s"},
   "compile_s"}

* `value_fn`: the game's value function alone on coalition masks already on the device, chunked by
  `--coalitions-per-call` (keep masks -> mean fill -> expert -> target score, logit and prob).
* `mc_kernel`: `mc_pair_statistics_batch` end to end (draw the coalitions on device, evaluate,
  reduce to SII / RG means and standard errors) on `--examples` examples (copies of the one example
  with their own keys), the call `flmoe probe` makes per batch of examples and expert; `coalitions`
  counts all examples. While one example's 4·pairs·draws coalitions fit `--coalitions-per-call`,
  several examples share a value-function call (`shapley.example_groups`).
Both are timed after a compile-and-warm-up call.

  python benchmarks/probe_bench.py                                     # CPU, < 2 minutes
  python benchmarks/probe_bench.py --coalitions-per-call 2048 --calls 20 --dtype bfloat16 \
    --examples 16   # GPU
  ... --dtype bfloat16 --attention cudnn   # GPU, cuDNN flash attention (bf16/fp16 only)
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
from flax import nnx  # noqa: E402

from flmoe_jax.models import FLI2MoE, ModelConfig  # noqa: E402
from flmoe_jax.probes import games, shapley  # noqa: E402


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--coalitions-per-call", type=int, default=32, help="batch of coalitions per call")
  p.add_argument("--calls", type=int, default=2, help="timed value-function calls")
  p.add_argument("--pairs", type=int, default=16, help="pairs in the MC-kernel measurement")
  p.add_argument("--draws", type=int, default=2, help="draws per pair in the MC-kernel measurement")
  p.add_argument("--examples", type=int, default=1, help="examples per batched MC-kernel call")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument(
    "--attention",
    choices=("einsum", "xla", "cudnn"),
    default="einsum",
    help="experts' attention: explicit einsum, or fused jax.nn.dot_product_attention (xla|cudnn)",
  )
  p.add_argument("--text-len", type=int, default=320)
  p.add_argument("--image-len", type=int, default=196)
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--input-dim", type=int, default=768)
  args = p.parse_args(argv)

  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  model = FLI2MoE(
    ModelConfig(
      input_dims=(args.input_dim, args.input_dim),
      num_classes=23,
      hidden_dim=args.hidden,
      num_heads=args.heads,
      num_layers=args.layers,
      rw_hidden=args.hidden,
      dropout=0.0,
      attention=args.attention,
      dtype=dtype,
    ),
    rngs=nnx.Rngs(0),
  )
  rng = np.random.default_rng(0)
  xs = [
    rng.normal(size=(1, args.text_len, args.input_dim)).astype(np.float32),
    rng.normal(size=(1, args.image_len, args.input_dim)).astype(np.float32),
  ]
  masks = [np.ones((1, args.text_len), bool), np.ones((1, args.image_len), bool)]
  means = [np.zeros(args.input_dim, np.float32)] * 2
  game = games.model_game(
    model,
    xs,
    masks,
    kinds=("tokens", "patches"),
    task_type="multilabel",
    expert="syn",
    score=("logit", "prob"),
    means=means,
  )
  n = game.n_players
  chunk = args.coalitions_per_call

  # Value function alone.
  total = chunk * args.calls
  coal = jax.random.bernoulli(jax.random.key(1), 0.5, (total, n))
  run = jax.jit(lambda c, params: shapley.evaluate_chunked(game.fn, params, c, chunk))
  t = time.perf_counter()
  jax.block_until_ready(run(coal, game.params))
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(run(coal, game.params))
  dt = time.perf_counter() - t

  # The MC kernel as the probe pipeline calls it: one batched call for a batch of examples.
  text_players = np.arange(args.pairs) % (args.text_len - 1)
  image_players = args.text_len - 1 + np.arange(args.pairs) % args.image_len
  pairs = np.stack([text_players, image_players], 1).astype(np.int32)
  draws = max(2, args.draws - args.draws % 2)
  n_ex = max(1, args.examples)
  shared = {k: game.params[k] for k in ("state", "fills")}
  batched = {
    k: jax.tree.map(lambda a: jnp.broadcast_to(a, (n_ex, *a.shape)), v)
    for k, v in game.params.items()
    if k not in shared
  }

  def mc(seed):
    return shapley.mc_pair_statistics_batch(
      game.fn,
      shared,
      batched,
      jax.random.split(jax.random.key(seed), n_ex),
      jnp.asarray(np.broadcast_to(pairs, (n_ex, *pairs.shape))),
      jnp.full(n_ex, n, jnp.int32),
      n_players=n,
      n_draws=draws,
      antithetic=True,
      chunk=chunk,
    )

  jax.block_until_ready(mc(0))
  t = time.perf_counter()
  jax.block_until_ready(mc(1))
  dt_mc = time.perf_counter() - t
  n_mc = 4 * args.pairs * draws * n_ex
  dev = jax.devices()[0]
  out = {
    "device": getattr(dev, "device_kind", str(dev)),
    "backend": jax.default_backend(),
    "dtype": args.dtype,
    "attention": args.attention,
    "L": args.text_len + args.image_len,
    "H": args.hidden,
    "n_players": n,
    "coalitions_per_call": chunk,
    "value_fn": {
      "coalitions": total,
      "seconds": round(dt, 4),
      "expert_evals_per_s": round(total / dt, 1),
    },
    "mc_kernel": {
      "examples": n_ex,
      "pairs": args.pairs,
      "draws": draws,
      "coalitions": n_mc,
      "seconds": round(dt_mc, 4),
      "expert_evals_per_s": round(n_mc / dt_mc, 1),
    },
    "compile_s": round(compile_s, 2),
  }
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
