"""Import/export of the authors' PyTorch `InteractionMoE` weights (SPEC Appendix A).

The reference state dict is a flat `{key: array}` mapping; PyTorch `Linear.weight` is
(out, in) and is transposed into a Flax kernel (in, out). Expert e's parameters become slice
[e] of the stacked `ExpertStack` parameters. The trainable encoder projections live in a separate
mapping `{"<modality>.proj.weight": (H, D), "<modality>.proj.bias": (H,)}`.

torch is optional: `.npz` files and in-memory mappings need only numpy; `.pt`/`.pth` files are read
with `torch.load` when torch is importable and raise a clear ImportError otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flmoe_jax.models.fl_i2moe import FLI2MoE

StateDictLike = Mapping[str, Any] | str | os.PathLike

_EXPERT_PREFIX = "interaction_experts.{e}.fusion_model."
_RW_KEY = "reweight.mlp.network.{i}."
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _to_numpy(v: Any) -> np.ndarray:
  if hasattr(v, "detach"):  # a torch tensor, without importing torch
    v = v.detach().cpu().numpy()
  return np.asarray(v)


def load_state_dict(source: StateDictLike) -> dict[str, np.ndarray]:
  """Reads a flat `{key: array}` state dict.

  Args:
    source: a mapping (numpy arrays or torch tensors), a `.npz` path, or a `.pt`/`.pth`/`.bin`/
      `.ckpt` path (needs torch).

  Returns:
    `{key: np.ndarray}`.

  Raises:
    ImportError: a torch file was given and torch is not installed.
    ValueError: unknown file type.
  """
  if isinstance(source, Mapping):
    return {str(k): _to_numpy(v) for k, v in source.items()}
  path = os.fspath(source)
  if path.endswith(".npz"):
    with np.load(path) as data:
      return {k: np.asarray(data[k]) for k in data.files}
  if path.endswith(_TORCH_SUFFIXES):
    try:
      import torch  # noqa: PLC0415 - optional dependency
    except ImportError as err:
      raise ImportError(
        f"reading {path!r} needs PyTorch (pip install 'flmoe_jax[torch]'); alternatively save the "
        "state dict as .npz: np.savez(f, **{k: v.numpy() for k, v in sd.items()})"
      ) from err
    obj = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no pickled code
    if hasattr(obj, "state_dict"):
      obj = obj.state_dict()
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
      obj = obj["state_dict"]
    return {str(k): _to_numpy(v) for k, v in obj.items()}
  raise ValueError(f"unsupported state-dict file {path!r}: expected .npz or {_TORCH_SUFFIXES}")


# ------------------------------------------------------------------------------------------------
# Key maps: (reference key suffix, path in our pure state dict, transpose?)
# ------------------------------------------------------------------------------------------------


def _linear_entries(ref: str, path: tuple, bias: bool = True) -> list[tuple[str, tuple, bool]]:
  out = [(f"{ref}.weight", (*path, "kernel"), True)]
  if bias:
    out.append((f"{ref}.bias", (*path, "bias"), False))
  return out


def _expert_entries(num_layers: int) -> list[tuple[str, tuple, bool]]:
  """Map of one expert's keys (relative to `...fusion_model.`) to `Expert` state paths."""
  entries = []
  for layer in range(num_layers):
    ref, path = f"network.{layer}", ("layers", layer)
    for norm in ("norm1", "norm2"):
      entries.append((f"{ref}.{norm}.weight", (*path, norm, "scale"), False))
      entries.append((f"{ref}.{norm}.bias", (*path, norm, "bias"), False))
    entries += _linear_entries(f"{ref}.attn.q", (*path, "attn", "q"), bias=False)
    entries += _linear_entries(f"{ref}.attn.kv", (*path, "attn", "kv"), bias=False)
    entries += _linear_entries(f"{ref}.attn.proj", (*path, "attn", "proj"))
    entries += _linear_entries(f"{ref}.mlp.network.0", (*path, "mlp", "fc1"))
    entries += _linear_entries(f"{ref}.mlp.network.3", (*path, "mlp", "fc2"))
  entries += _linear_entries(f"network.{num_layers}.fc", ("head",))
  return entries


def _reweight_entries(rw_layers: int) -> list[tuple[str, tuple, bool]]:
  # Reference indices 0, 3, 6, ...: each Linear is followed by ReLU and Dropout.
  return [
    e
    for i in range(rw_layers)
    for e in _linear_entries(f"reweight.mlp.network.{3 * i}", ("reweight", "layers", i))
  ]


def _get(tree: dict, path: tuple) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: dict, path: tuple, value: Any) -> None:
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def _indices(sd: Mapping[str, Any], pattern: str) -> list[int]:
  rx = re.compile(pattern)
  return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def infer_config(
  sd: Mapping[str, np.ndarray], encoders: Mapping[str, np.ndarray], modality_names: Sequence[str]
) -> dict[str, Any]:
  """Reads the architecture sizes off a reference state dict.

  Args:
    sd: reference `InteractionMoE` state dict.
    encoders: projection weights `<modality>.proj.weight` (H, D_m) / `.bias`.
    modality_names: modality names in input order.

  Returns:
    FLI2MoE keyword arguments: input_dims, num_classes, hidden_dim, num_layers, mlp_ratio,
    rw_layers, rw_hidden (num_heads, temperature, dropout are not stored in the weights).

  Raises:
    ValueError: inconsistent or unrecognised state dict.
  """
  experts = _indices(sd, r"interaction_experts\.(\d+)\.")
  if experts != list(range(len(experts))) or not experts:
    raise ValueError(f"no contiguous interaction_experts.* keys found (got indices {experts})")
  if len(experts) != len(modality_names) + 2:
    raise ValueError(
      f"{len(experts)} experts in the state dict but {len(modality_names)} modalities "
      f"({list(modality_names)}); expected M + 2 experts"
    )
  prefix = _EXPERT_PREFIX.format(e=0)
  num_layers = len(_indices(sd, re.escape(prefix) + r"network\.(\d+)\.norm1\.weight"))
  hidden = sd[f"{prefix}network.0.norm1.weight"].shape[0]
  mlp_dim = sd[f"{prefix}network.0.mlp.network.0.weight"].shape[0]
  if mlp_dim % hidden:
    raise ValueError(f"MLP width {mlp_dim} is not a multiple of H={hidden}")
  rw = _indices(sd, r"reweight\.mlp\.network\.(\d+)\.weight")
  if rw != list(range(0, 3 * len(rw), 3)):
    raise ValueError(f"unexpected reweighter layer indices {rw}; expected 0, 3, 6, ...")
  rw_hidden = sd["reweight.mlp.network.0.weight"].shape[0] if len(rw) > 1 else 256
  return dict(
    input_dims=tuple(int(encoders[f"{n}.proj.weight"].shape[1]) for n in modality_names),
    num_classes=int(sd[f"{prefix}network.{num_layers}.fc.weight"].shape[0]),
    hidden_dim=int(hidden),
    num_layers=num_layers,
    mlp_ratio=int(mlp_dim // hidden),
    rw_layers=len(rw),
    rw_hidden=int(rw_hidden),
  )


def load_reference_params(
  model: FLI2MoE,
  sd: StateDictLike,
  encoders: StateDictLike,
  modality_names: Sequence[str],
  *,
  strict: bool = True,
) -> FLI2MoE:
  """Overwrites `model`'s parameters (in place) with reference weights.

  Args:
    model: an FLI2MoE with matching sizes.
    sd: reference `InteractionMoE` state dict (mapping or path).
    encoders: projection weights (mapping or path); extra keys (e.g. frozen backbones) ignored.
    modality_names: modality names in the order of the model's inputs.
    strict: raise on state-dict keys that were not consumed.

  Returns:
    The same model, for chaining.

  Raises:
    KeyError: a needed key is missing.
    ValueError: a shape mismatch, or (strict) unexpected keys.
  """
  sd, encoders = load_state_dict(sd), load_state_dict(encoders)
  state = nnx.state(model, nnx.Param)
  pure = nnx.to_pure_dict(state)
  used = set()

  def put(path, value):
    old = _get(pure, path)
    if tuple(old.shape) != tuple(value.shape):
      raise ValueError(
        f"shape mismatch at {'/'.join(map(str, path))}: {value.shape} vs {old.shape}"
      )
    _set(pure, path, jnp.asarray(value, dtype=old.dtype))

  num_e = model.num_experts
  for suffix, path, transpose in _expert_entries(model.num_layers):
    keys = [_EXPERT_PREFIX.format(e=e) + suffix for e in range(num_e)]
    arrays = [sd[k].T if transpose else sd[k] for k in keys]
    used.update(keys)
    put(("experts", "stacked", *path), np.stack(arrays))
  for key, path, transpose in _reweight_entries(len(model.reweight.layers)):
    used.add(key)
    put(path, sd[key].T if transpose else sd[key])
  if len(modality_names) != model.num_modalities:
    raise ValueError(f"{len(modality_names)} modality names for {model.num_modalities} modalities")
  for m, name in enumerate(modality_names):
    put(("projections", m, "kernel"), encoders[f"{name}.proj.weight"].T)
    put(("projections", m, "bias"), encoders[f"{name}.proj.bias"])
  unexpected = sorted(set(sd) - used)
  if strict and unexpected:
    raise ValueError(f"unexpected keys in the reference state dict: {unexpected[:10]}")
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


def from_reference_state_dict(
  sd: StateDictLike,
  encoders: StateDictLike,
  modality_names: Sequence[str],
  *,
  num_heads: int = 4,
  temperature: float = 2.0,
  strict: bool = True,
  **model_kwargs,
) -> FLI2MoE:
  """Builds an FLI2MoE holding the reference weights.

  Sizes (H, layers, MLP ratio, classes, reweighter depth/width, input dims) are read from the
  weights; the head count and temperature are not stored there and must be given if they differ
  from the defaults.

  Args:
    sd: reference `InteractionMoE` state dict: mapping, `.npz` or (with torch) `.pt` path.
    encoders: `<modality>.proj.weight` (H, D_m) / `.bias` (H,) mapping or path.
    modality_names: modality names in the order of the model's inputs (= meta.json "names").
    num_heads: attention heads.
    temperature: gate softmax temperature.
    strict: raise on unexpected state-dict keys.
    **model_kwargs: other FLI2MoE arguments (dropout, ln_eps, dtype, param_dtype, ...); any size
      that is also inferred from the weights must agree with it.

  Returns:
    The model.
  """
  sd, encoders = load_state_dict(sd), load_state_dict(encoders)
  cfg = infer_config(sd, encoders, modality_names)
  for k, v in model_kwargs.items():
    if k in cfg and tuple(np.atleast_1d(cfg[k])) != tuple(np.atleast_1d(v)):
      raise ValueError(f"{k}={v!r} contradicts the state dict ({cfg[k]!r})")
  kwargs = {**model_kwargs, **cfg}
  # Abstract construction: every parameter is overwritten below, so no random init is computed.
  model = nnx.eval_shape(
    lambda: FLI2MoE(num_heads=num_heads, temperature=temperature, rngs=nnx.Rngs(0), **kwargs)
  )
  model = load_reference_params(model, sd, encoders, modality_names, strict=strict)
  leftover = [
    p
    for p, v in nnx.to_flat_state(nnx.state(model))
    if isinstance(v.get_value(), jax.ShapeDtypeStruct)
  ]
  if leftover:  # defensive: a variable the key map does not cover
    raise ValueError(f"parameters not covered by the reference state dict: {leftover[:5]}")
  return model


def to_reference_state_dict(model: FLI2MoE) -> dict[str, np.ndarray]:
  """The inverse of `load_reference_params` for the `InteractionMoE` part (no projections).

  Args:
    model: an FLI2MoE.

  Returns:
    `{reference key: np.ndarray}` with PyTorch (out, in) Linear weights.
  """
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  sd: dict[str, np.ndarray] = {}
  for key, path, transpose in _reweight_entries(len(model.reweight.layers)):
    v = np.asarray(_get(pure, path))
    sd[key] = v.T if transpose else v
  for e in range(model.num_experts):
    for suffix, path, transpose in _expert_entries(model.num_layers):
      v = np.asarray(_get(pure, ("experts", "stacked", *path))[e])
      sd[_EXPERT_PREFIX.format(e=e) + suffix] = v.T if transpose else v
  return sd


def to_reference_encoders(model: FLI2MoE, modality_names: Sequence[str]) -> dict[str, np.ndarray]:
  """The projections in the reference encoder layout.

  Args:
    model: an FLI2MoE (or DenseTransformer).
    modality_names: modality names in input order.

  Returns:
    `{"<name>.proj.weight": (H, D_m), "<name>.proj.bias": (H,)}`.
  """
  out = {}
  for proj, name in zip(model.projections, modality_names, strict=True):
    out[f"{name}.proj.weight"] = np.asarray(proj.kernel.get_value()).T
    out[f"{name}.proj.bias"] = np.asarray(proj.bias.get_value())
  return out
