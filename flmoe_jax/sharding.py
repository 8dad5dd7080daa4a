"""Device mesh and logical-axis rules (MaxText style: the rules are data in the config).

The mesh has two axes: `data` (the batch) and `expert` (the stacked experts' leading axis). Arrays are
described by *logical* axis names (`batch`, `expert`, or None); `config.mesh.rules` maps them to mesh axes,
so a new layout is a config change, not a code change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from flmoe_jax.errors import ConfigError

DEFAULT_RULES = (("batch", "data"), ("expert", "expert"))


def make_mesh(
  shape: Sequence[int] = (-1, 1), axes: Sequence[str] = ("data", "expert"), devices=None
):
  """Builds a mesh over the local devices; one entry of `shape` may be -1 (all remaining devices).

  Args:
    shape: mesh shape, e.g. (-1, 1) = data parallel over every device, (4, 2) = 4-way data x 2-way expert.
    axes: mesh axis names.
    devices: devices to use (default: all).

  Returns:
    A `jax.sharding.Mesh` with explicit Auto axis types (GSPMD propagation, no `with mesh:`).
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = [int(s) for s in shape]
  if len(shape) != len(axes):
    raise ConfigError(f"mesh shape {tuple(shape)} and axes {tuple(axes)} differ in length")
  if shape.count(-1) > 1:
    raise ConfigError(f"mesh shape {tuple(shape)}: at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ConfigError(f"mesh shape {tuple(shape)} does not divide {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) > len(devices):
    raise ConfigError(
      f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, have {len(devices)}"
    )
  # jax.make_mesh lays the devices out for the physical topology (TPU slices: contiguous ICI rings
  # along each axis); the checks above give our one-line errors first.
  return jax.make_mesh(
    tuple(shape),
    tuple(axes),
    axis_types=(AxisType.Auto,) * len(axes),
    devices=devices[: math.prod(shape)],
  )


def logical_to_spec(logical: Sequence[str | None], rules=DEFAULT_RULES) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec with the rules ((logical, mesh axis), ...)."""
  table = {k: v for k, v in rules}
  return PartitionSpec(*(table.get(name) if name is not None else None for name in logical))


def _axis_size(mesh, axis: str | None) -> int:
  return 1 if axis is None else mesh.shape[axis]


def batch_sharding(mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Sharding of a batch array: leading axis on the `batch` rule, the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def replicated(mesh) -> NamedSharding:
  """The whole array on every device of the mesh (e.g. metrics every process reads)."""
  return NamedSharding(mesh, PartitionSpec())


def with_leading_axes(sharding: NamedSharding, lead: int = 1) -> NamedSharding:
  """`sharding` behind `lead` new replicated leading axes (e.g. a seed axis of vmapped seeds)."""
  return NamedSharding(sharding.mesh, PartitionSpec(*(None,) * lead, *sharding.spec))


def local_rows(batch_size: int, mesh, rules=DEFAULT_RULES) -> tuple[int, int]:
  """The rows [lo, hi) of a global batch that this process's devices hold.

  With one process: (0, batch_size). With several, each reads only these rows from the store and
  `global_batch` assembles the global batch from every process's part.

  Raises:
    ConfigError: the mesh gives this process rows that are not one contiguous block.
  """
  index = batch_sharding(mesh, 1, rules).addressable_devices_indices_map((batch_size,))
  spans = sorted({s[0].indices(batch_size)[:2] for s in index.values()})
  lo, hi = spans[0][0], spans[0][1]
  for a, b in spans[1:]:
    if a > hi:
      raise ConfigError(
        f"the mesh gives process {jax.process_index()} the rows {spans} of each batch, not one "
        "block; lay the data axis out over whole processes (mesh.shape with the data axis first)"
      )
    hi = max(hi, b)
  return lo, hi


def global_batch(batch, mesh, batch_size: int, rules=DEFAULT_RULES, *, lead: int = 0):
  """The global batch on the mesh from this process's rows (`local_rows`) of it.

  Args:
    batch: pytree of numpy arrays [*lead_dims, rows, ...]: this process's rows of the batch.
    mesh: the device mesh.
    batch_size: the global batch size.
    rules: logical-axis rules.
    lead: leading axes before the batch axis (e.g. 1 for vmapped seeds), replicated.

  Returns:
    The pytree of global `jax.Array`s [*lead_dims, batch_size, ...].
  """

  def one(a):
    sh = with_leading_axes(batch_sharding(mesh, np.ndim(a) - lead, rules), lead)
    shape = (*np.shape(a)[:lead], batch_size, *np.shape(a)[lead + 1 :])
    return jax.make_array_from_process_local_data(sh, a, shape)

  return jax.tree.map(one, batch)


def state_shardings(state, mesh, rules=DEFAULT_RULES):
  """Shardings of a model/optimizer state, from the logical axis names its variables carry.

  A variable names its axes in its `out_sharding` metadata (the ExpertStack's parameters:
  ("expert", None, ...); `nnx.Optimizer` copies them onto the moments it keeps per parameter), and
  `nnx.get_partition_spec` reads them. The rules map each logical name to a mesh axis; a dimension
  that mesh axis does not divide, a name without a rule and every unnamed variable are replicated.

  Args:
    state: an `nnx.State` (e.g. the pure form of (model, optimizer) from `nnx.split`).
    mesh: the device mesh.
    rules: ((logical name, mesh axis or None), ...), e.g. `config.mesh.rules`.

  Returns:
    A tree of `NamedSharding` with the structure of `state`.
  """
  table = dict(rules)

  def one(spec, leaf):
    if spec is None:  # no array here: an optax MaskedNode (the frozen gate's masked-out moments)
      return leaf
    axes = []
    for dim, name in zip(np.shape(leaf), tuple(spec)):
      axis = table.get(name) if name is not None else None
      axes.append(axis if axis is not None and dim % _axis_size(mesh, axis) == 0 else None)
    return NamedSharding(mesh, PartitionSpec(*axes))

  specs = nnx.get_partition_spec(state)
  return jax.tree.map(
    one, specs, state, is_leaf=lambda x: x is None or isinstance(x, PartitionSpec)
  )


def check_batch_size(batch_size: int, mesh, rules=DEFAULT_RULES) -> None:
  """Raises ConfigError unless the batch splits evenly over the data axis."""
  n = _axis_size(mesh, dict(rules).get("batch"))
  if batch_size % n:
    raise ConfigError(
      f"batch size {batch_size} is not divisible by the {n}-way data axis of the mesh"
    )


def check_expert_axis(num_experts: int, mesh, rules=DEFAULT_RULES) -> None:
  """Raises ConfigError unless the experts split evenly over the mesh axis the rules give them.

  (`state_shardings` itself replicates a stack its axis does not divide; a training run asks for
  expert parallelism by its mesh, so there it is an error, named before anything compiles.)
  """
  n = _axis_size(mesh, dict(rules).get("expert"))
  if n > 1 and num_experts % n:
    fits = [d for d in range(1, num_experts + 1) if num_experts % d == 0]
    raise ConfigError(
      f"the {n}-way expert axis of the mesh does not divide the model's {num_experts} experts; "
      f"use an expert axis of {', '.join(map(str, fits))}"
    )
