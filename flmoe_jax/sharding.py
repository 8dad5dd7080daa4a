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
  devs = np.asarray(devices[: math.prod(shape)]).reshape(shape)
  return jax.sharding.Mesh(devs, tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def logical_to_spec(logical: Sequence[str | None], rules=DEFAULT_RULES) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec with the rules ((logical, mesh axis), ...)."""
  table = {k: v for k, v in rules}
  return PartitionSpec(*(table.get(name) if name is not None else None for name in logical))


def _axis_size(mesh, axis: str | None) -> int:
  return 1 if axis is None else mesh.shape[axis]


def batch_sharding(mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Sharding of a batch array: leading axis on the `batch` rule, the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def shard_batch(batch, mesh, rules=DEFAULT_RULES):
  """Puts a host batch (pytree of numpy arrays with a leading batch axis) on the mesh."""
  return jax.tree.map(lambda a: jax.device_put(a, batch_sharding(mesh, np.ndim(a), rules)), batch)


def state_shardings(state, mesh, rules=DEFAULT_RULES):
  """Shardings for a model/optimizer state: stacked-expert leaves split on `expert`, others replicated.

  A leaf is "stacked" when its path goes through an `experts` node (the ExpertStack: every leaf there has
  a leading expert axis). Its leading axis gets the logical name `expert` when the mesh axis it maps to
  divides it; anything else is replicated.
  """
  expert_axis = dict(rules).get("expert")
  n = _axis_size(mesh, expert_axis)

  def one(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    shape = np.shape(leaf)
    if "experts" in names and len(shape) >= 1 and shape[0] % n == 0:
      return NamedSharding(mesh, logical_to_spec(("expert",) + (None,) * (len(shape) - 1), rules))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree_util.tree_map_with_path(one, state)


def check_batch_size(batch_size: int, mesh, rules=DEFAULT_RULES) -> None:
  """Raises ConfigError unless the batch splits evenly over the data axis."""
  n = _axis_size(mesh, dict(rules).get("batch"))
  if batch_size % n:
    raise ConfigError(
      f"batch size {batch_size} is not divisible by the {n}-way data axis of the mesh"
    )
