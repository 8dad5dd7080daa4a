"""Device memory of one FL-I2MoE training step, per device, as XLA plans it (prints JSON lines).

For each point of a grid over batch size, sequence lengths, width and mesh, the jitted train step
(`flmoe_jax.train.train_step`, the paper's objective: the noise passes run) is lowered on abstract
inputs (nothing is allocated) and compiled, and `compiled.memory_analysis()` gives the bytes XLA
plans per device: arguments (the state and the batch shard), outputs, and temporaries (activations
and gradients). Meshes `data x expert` run on fake CPU devices here
(`--xla_force_host_platform_device_count`); the same program on accelerators plans alike, but these
are compiler plans on the CPU backend, not a GPU's measured peak.

  python benchmarks/memory_bench.py                         # the default grid, 8 fake devices
  python benchmarks/memory_bench.py --batch 32 --text-len 320 --patches 196 --hidden 256 --mesh 1x1,1x4

Not a test: a measurement.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)

import argparse  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from flmoe_jax import sharding, train  # noqa: E402
from flmoe_jax.models import FLI2MoE, ModelConfig  # noqa: E402

RULES = (("batch", "data"), ("expert", "expert"))


def _ints(text: str) -> list[int]:
  return [int(t) for t in text.split(",")]


def plan(batch: int, text_len: int, patches: int, hidden: int, dim: int, mesh_shape) -> dict:
  """The per-device memory plan of one train step at one size and mesh."""
  mesh = sharding.make_mesh(mesh_shape)
  cfg = ModelConfig(
    input_dims=(dim, dim), num_classes=23, hidden_dim=hidden, num_heads=4, num_layers=2
  )

  def init():
    model = FLI2MoE(cfg, rngs=nnx.Rngs(0))
    return nnx.split((model, nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)))

  graphdef, abstract = nnx.eval_shape(lambda: init())
  shardings = sharding.state_shardings(abstract, mesh, RULES)
  state = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )

  def spec(shape, dtype):
    return jax.ShapeDtypeStruct(
      shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape), RULES)
    )

  batch_spec = {
    "x": (spec((batch, text_len, dim), jnp.float32), spec((batch, patches, dim), jnp.float32)),
    "mask": (spec((batch, text_len), jnp.bool_), spec((batch, patches), jnp.bool_)),
    "label": spec((batch, 23), jnp.uint8),
    "weight": spec((batch,), jnp.float32),
  }
  step = jax.jit(
    functools.partial(
      train.train_step,
      graphdef=graphdef,
      dtype=jnp.float32,
    ),
    donate_argnums=(0,),
    out_shardings=(shardings, None),
  )
  objective = train.Objective(task_type="multilabel", lambda_int=0.5)
  mem = step.lower(state, batch_spec, jax.random.key(0), objective).compile().memory_analysis()
  mib = 1 / 2**20
  return {
    "batch": batch,
    "text_len": text_len,
    "patches": patches,
    "hidden": hidden,
    "feature_dim": dim,
    "experts": 4,
    "mesh": "x".join(map(str, mesh_shape)),
    "argument_mib": round(mem.argument_size_in_bytes * mib, 2),
    "output_mib": round(mem.output_size_in_bytes * mib, 2),
    "temp_mib": round(mem.temp_size_in_bytes * mib, 2),
    "alias_mib": round(mem.alias_size_in_bytes * mib, 2),
    "backend": jax.default_backend(),
  }


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", default="16,64")
  ap.add_argument("--text-len", default="64,256")
  ap.add_argument("--patches", default="49,196")
  ap.add_argument("--hidden", default="128,256")
  ap.add_argument("--dim", type=int, default=768)
  ap.add_argument("--mesh", default="1x1,1x4", help="data x expert meshes, comma-separated")
  args = ap.parse_args()
  meshes = [tuple(int(d) for d in m.split("x")) for m in args.mesh.split(",")]
  for b, t, p, h, m in itertools.product(
    _ints(args.batch), _ints(args.text_len), _ints(args.patches), _ints(args.hidden), meshes
  ):
    print(json.dumps(plan(b, t, p, h, args.dim, m)), flush=True)


if __name__ == "__main__":
  main()
