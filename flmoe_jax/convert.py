"""Import/export of the authors' PyTorch `InteractionMoE` weights (state-dict names and shapes below).

The reference state dict is a flat `{key: array}` mapping; PyTorch `Linear.weight` is
(out, in) and is transposed into a Flax kernel (in, out). Expert e's parameters become slice
[e] of the stacked `ExpertStack` parameters. The trainable encoder projections live in a separate
mapping `{"<modality>.proj.weight": (H, D), "<modality>.proj.bias": (H,)}`.

torch is optional: `.npz` files and in-memory mappings need only numpy; `.pt`/`.pth` files are read
with `torch.load` when torch is importable and raise a clear ImportError otherwise.

A state dict that cannot be read or does not fit (a missing or truncated file, a missing key, an
array of the wrong shape or of strings) raises `ConversionError`, a `FlmoeError` with a one-line
message naming the file or key.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flmoe_jax.errors import FlmoeError
from flmoe_jax.models.config import ModelConfig
from flmoe_jax.models.fl_i2moe import FLI2MoE


class ConversionError(FlmoeError, ValueError):
  """A reference state dict that cannot be read, or that does not fit the model (a user error).

  Also a ValueError, which this module raised before.
  """


class MissingKeyError(ConversionError, KeyError):
  """A key the model needs is not in the reference state dict (also a KeyError)."""

  def __str__(self) -> str:  # KeyError would print the message as a quoted repr
    return str(self.args[0]) if self.args else ""


StateDictLike = Mapping[str, Any] | str | os.PathLike

_EXPERT_PREFIX = "interaction_experts.{e}.fusion_model."
_RW_KEY = "reweight.mlp.network.{i}."
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _to_numpy(v: Any) -> np.ndarray:
  if hasattr(v, "detach"):  # a torch tensor, without importing torch
    v = v.detach().cpu().numpy()
  return np.asarray(v)


def _one_line(e: BaseException) -> str:
  return " ".join(f"{type(e).__name__}: {e}".split())


def _check_numeric(sd: Mapping[str, np.ndarray], where: str) -> None:
  """Raises ConversionError naming the first entry that is not a numeric array (e.g. strings)."""
  for k, a in sd.items():
    kind = a.dtype.kind
    # "V" holds ml_dtypes' bfloat16 / float8 (numeric) but also raw void records (not numbers).
    if kind in "USOMmc" or (kind == "V" and not a.dtype.name.startswith(("bfloat", "float"))):
      raise ConversionError(
        f"{where}: {k!r} holds {a.dtype} values, not numbers; every entry must be a numeric "
        "(float) array: re-export the weights"
      )


def _read_npz(path: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise ConversionError(f"state-dict file {path} does not exist")
  if not os.path.isfile(path):
    raise ConversionError(f"state-dict file {path} is not a file")
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: np.asarray(data[k]) for k in data.files}
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
    raise ConversionError(
      f"{path} is not a readable .npz archive ({_one_line(e)}); it may be truncated or not written "
      "by np.savez: copy or save it again"
    ) from None


def _need(mapping: Mapping[str, Any], key: str, what: str, hint: str) -> Any:
  """mapping[key], or MissingKeyError naming the key, where it was looked up and what to check."""
  if key not in mapping:
    raise MissingKeyError(f"{what}: no key {key!r} ({hint})")
  return mapping[key]


def load_state_dict(source: StateDictLike) -> dict[str, np.ndarray]:
  """Reads a flat `{key: array}` state dict.

  Args:
    source: a mapping (numpy arrays or torch tensors), a `.npz` path, or a `.pt`/`.pth`/`.bin`/
      `.ckpt` path (needs torch).

  Returns:
    `{key: np.ndarray}`.

  Raises:
    ImportError: a torch file was given and torch is not installed.
    ConversionError: unknown file type, a missing or unreadable file, or a non-numeric entry.
  """
  if isinstance(source, Mapping):
    out = {str(k): _to_numpy(v) for k, v in source.items()}
    _check_numeric(out, "the state dict")
    return out
  path = os.fspath(source)
  if path.endswith(".npz"):
    out = _read_npz(path)
    _check_numeric(out, path)
    return out
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
    out = {str(k): _to_numpy(v) for k, v in obj.items()}
    _check_numeric(out, path)
    return out
  raise ConversionError(f"unsupported state-dict file {path!r}: expected .npz or {_TORCH_SUFFIXES}")


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
    ConversionError: inconsistent or unrecognised state dict (MissingKeyError: a needed key).
  """
  experts = _indices(sd, r"interaction_experts\.(\d+)\.")
  if experts != list(range(len(experts))) or not experts:
    raise ConversionError(
      f"no contiguous interaction_experts.* keys found (got indices {experts}); is this an "
      "InteractionMoE state dict?"
    )
  if len(experts) != len(modality_names) + 2:
    raise ConversionError(
      f"{len(experts)} experts in the state dict but {len(modality_names)} modalities "
      f"({list(modality_names)}); expected M + 2 experts"
    )
  prefix = _EXPERT_PREFIX.format(e=0)
  num_layers = len(_indices(sd, re.escape(prefix) + r"network\.(\d+)\.norm1\.weight"))
  what, hint = "the reference state dict", "is it a complete InteractionMoE state dict?"

  def dim(mapping, key, axis, where=what, why=hint) -> int:
    a = _need(mapping, key, where, why)
    if a.ndim <= axis:
      raise ConversionError(f"{where}: {key!r} has shape {a.shape}; expected at least {axis + 1}-D")
    return int(a.shape[axis])

  hidden = dim(sd, f"{prefix}network.0.norm1.weight", 0)
  mlp_dim = dim(sd, f"{prefix}network.0.mlp.network.0.weight", 0)
  if mlp_dim % hidden:
    raise ConversionError(f"MLP width {mlp_dim} is not a multiple of H={hidden}")
  rw = _indices(sd, r"reweight\.mlp\.network\.(\d+)\.weight")
  if rw != list(range(0, 3 * len(rw), 3)):
    raise ConversionError(f"unexpected reweighter layer indices {rw}; expected 0, 3, 6, ...")
  rw_hidden = dim(sd, "reweight.mlp.network.0.weight", 0) if len(rw) > 1 else 256
  enc_hint = f"modality names {list(modality_names)}; keys there: {sorted(encoders)[:6]}"
  return dict(
    input_dims=tuple(
      dim(encoders, f"{n}.proj.weight", 1, "the encoder projections", enc_hint)
      for n in modality_names
    ),
    num_classes=dim(sd, f"{prefix}network.{num_layers}.fc.weight", 0),
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
    MissingKeyError: a needed key is missing (a KeyError and a ConversionError).
    ConversionError: a shape mismatch, or (strict) unexpected keys (also ValueErrors).
  """
  sd, encoders = load_state_dict(sd), load_state_dict(encoders)
  state = nnx.state(model, nnx.Param)
  pure = nnx.to_pure_dict(state)
  used = set()
  sizes = f"hidden_dim {model.hidden_dim}, {model.num_layers} layer(s), {model.num_experts} experts"
  sd_hint = f"the model has {sizes}; is the state dict complete?"
  if len(modality_names) != model.num_modalities:
    raise ConversionError(
      f"{len(modality_names)} modality names for {model.num_modalities} modalities"
    )

  def take(mapping, key, what, hint, want, transpose) -> np.ndarray:
    """mapping[key] in the model's layout, checked against the model's shape `want`."""
    a = _need(mapping, key, what, hint)
    want_ref = tuple(reversed(want)) if transpose else tuple(want)
    if tuple(a.shape) != want_ref:
      raise ConversionError(
        f"{what}: {key!r} has shape {tuple(a.shape)}, the model needs {want_ref} ({sizes}); the "
        "state dict does not match the architecture read from its other weights"
      )
    return a.T if transpose else a

  problems: list[ConversionError] = []  # every key problem, reported together at the end

  def put(path, value):
    if value is None:  # its problem is recorded
      return
    old = _get(pure, path)
    _set(pure, path, jnp.asarray(value, dtype=old.dtype))

  def try_take(*args) -> np.ndarray | None:
    try:
      return take(*args)
    except ConversionError as e:
      problems.append(e)
      return None

  num_e = model.num_experts
  sd_what = "the reference state dict"
  for suffix, path, transpose in _expert_entries(model.num_layers):
    keys = [_EXPERT_PREFIX.format(e=e) + suffix for e in range(num_e)]
    want = _get(pure, ("experts", "stacked", *path)).shape[1:]
    arrays = [try_take(sd, k, sd_what, sd_hint, want, transpose) for k in keys]
    used.update(keys)
    complete = all(a is not None for a in arrays)
    put(("experts", "stacked", *path), np.stack(arrays) if complete else None)
  for key, path, transpose in _reweight_entries(len(model.reweight.layers)):
    used.add(key)
    put(path, try_take(sd, key, sd_what, sd_hint, _get(pure, path).shape, transpose))
  enc_what = "the encoder projections"
  enc_hint = f"modality names {list(modality_names)}; keys there: {sorted(encoders)[:6]}"
  for m, name in enumerate(modality_names):
    for leaf, suffix, transpose in (("kernel", "weight", True), ("bias", "bias", False)):
      path = ("projections", m, leaf)
      key = f"{name}.proj.{suffix}"
      put(path, try_take(encoders, key, enc_what, enc_hint, _get(pure, path).shape, transpose))
  unexpected = sorted(set(sd) - used)
  if strict and unexpected:
    problems.append(
      ConversionError(
        f"unexpected keys in the reference state dict: {unexpected[:10]} (not weights of an "
        "InteractionMoE of these sizes; strict=False ignores them)"
      )
    )
  if problems:
    # All of them at once: one fix-and-rerun cycle, not one per key. A missing key keeps its type.
    if len(problems) == 1:
      raise problems[0]
    all_missing = all(isinstance(e, MissingKeyError) for e in problems)
    raise (MissingKeyError if all_missing else ConversionError)(
      f"{len(problems)} problems with the reference weights: "
      + "; ".join(" ".join(str(e).split()) for e in problems)
    )
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
      raise ConversionError(f"{k}={v!r} contradicts the state dict ({cfg[k]!r})")
  kwargs = {**model_kwargs, **cfg}
  # Abstract construction: every parameter is overwritten below, so no random init is computed.
  model = nnx.eval_shape(
    lambda: FLI2MoE(
      ModelConfig(num_heads=num_heads, temperature=temperature, **kwargs), rngs=nnx.Rngs(0)
    )
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
