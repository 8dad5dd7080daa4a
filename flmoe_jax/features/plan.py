"""Planning an extraction: the encoder of each modality, the examples of each split and the fingerprint
that names this extraction (a partial run or a store made differently is refused by it).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from flmoe_jax.data.raw.base import RawDataset, RawExample
from flmoe_jax.errors import EncoderError
from flmoe_jax.features.encoders import ImageEncoder, TextEncoder

# Encoder fields that define the features; a partial run or store that differs in any is refused.
# The attention implementation (`attention`, recorded when fused) is not one: the fused and the
# einsum paths compute the same function and differ by float rounding, so a run may resume with the
# other one.
IDENTITY_KEYS = (
  "kind",
  "model_type",
  "hidden_size",
  "seq_len",
  "compute_dtype",
  "image_size",
  "patch_size",
  "params_digest",
)


@dataclasses.dataclass
class Plan:
  raw: RawDataset
  encoders: dict[
    str, TextEncoder | ImageEncoder
  ]  # modality name -> encoder (image encoders may be shared)
  splits: dict[str, Sequence[RawExample]]  # lists, or lazy sequences (TFDS) read batch by batch
  fingerprint: dict[str, Any]
  chunk_size: int

  def num_chunks(self, split: str) -> int:
    return -(-len(self.splits[split]) // self.chunk_size)


def assign_encoders(raw: RawDataset, text_encoder, image_encoder) -> dict[str, Any]:
  encoders = {}
  for m in raw.modalities:
    given = text_encoder if m.kind == "text" else image_encoder
    enc = given.get(m.name) if isinstance(given, Mapping) else given
    if enc is None:
      flag = "text_encoder" if m.kind == "text" else "image_encoder"
      raise EncoderError(f"modality {m.name!r} ({m.kind}) needs an encoder: pass {flag}")
    if enc.kind != m.kind:
      raise EncoderError(
        f"modality {m.name!r} is {m.kind} but was given a {enc.kind} encoder ({enc.name})"
      )
    encoders[m.name] = enc
  return encoders


class Head(collections.abc.Sequence):
  """The first `n` examples of a (possibly lazy) sequence, read only on access."""

  def __init__(self, seq: Sequence[RawExample], n: int):
    self._seq, self._n = seq, n

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self._seq[slice(*index.indices(self._n))]
    if not -self._n <= index < self._n:
      raise IndexError(index)
    return self._seq[index % self._n]


def limited(seq: Sequence[RawExample], limit: int | None) -> Sequence[RawExample]:
  if limit is None or limit >= len(seq):
    return seq
  return seq[:limit] if isinstance(seq, list) else Head(seq, limit)


def ids_hash(examples: Sequence[RawExample]) -> str:
  """A hash of a split's ids (lazy TFDS splits decode on access: only a few ids are sampled)."""
  if isinstance(examples, list):
    ids = [str(e.id) for e in examples]
  else:
    n = len(examples)
    ids = ["lazy", str(n)] + [
      str(examples[i].id) for i in sorted({0, 1, n // 2, n - 2, n - 1}) if 0 <= i < n
    ]
  return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def fingerprint(raw, encoders, splits, dtype, chunk_size) -> dict[str, Any]:
  return {
    "dataset": raw.name,
    "modalities": [
      {"name": m.name, "kind": m.kind, "encoder": encoders[m.name].info()} for m in raw.modalities
    ],
    "task": {"type": raw.task.type, "num_classes": raw.task.num_classes},
    "dtype": dtype,
    "chunk_size": chunk_size,
    "splits": {s: {"n": len(ex), "ids": ids_hash(ex)} for s, ex in splits.items()},
  }


def describe(enc_info: Mapping[str, Any]) -> str:
  size = f"{enc_info.get('seq_len')} {'tokens' if enc_info.get('kind') == 'text' else 'patches'}"
  return (
    f"{enc_info.get('name')} ({enc_info.get('model_type')}, dim {enc_info.get('hidden_size')}, "
    f"{size}, "
    f"{enc_info.get('compute_dtype')}, weights {str(enc_info.get('params_digest'))[:8]})"
  )


def difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
  """A one-line reason why two fingerprints describe different extractions, or None."""
  old_mods = [(m["name"], m["kind"]) for m in old.get("modalities", [])]
  new_mods = [(m["name"], m["kind"]) for m in new["modalities"]]
  if old_mods != new_mods:
    return f"modalities {old_mods} vs {new_mods}"
  for om, nm in zip(old["modalities"], new["modalities"]):
    oe, ne = om["encoder"], nm["encoder"]
    if any(oe.get(k) != ne.get(k) for k in IDENTITY_KEYS):
      return (
        f"modality {nm['name']!r} was encoded with {describe(oe)}, this run uses {describe(ne)}"
      )
  for key in ("dataset", "task", "dtype", "chunk_size"):
    if old.get(key) != new.get(key):
      return f"{key} {old.get(key)!r} vs {new.get(key)!r}"
  if old.get("splits") != new.get("splits"):
    return (
      f"the examples differ (splits {split_sizes(old)} vs {split_sizes(new)}, or other ids: a "
      "changed dataset or limit_per_split)"
    )
  return None


def split_sizes(fp) -> dict[str, int]:
  return {k: v["n"] for k, v in fp.get("splits", {}).items()}
