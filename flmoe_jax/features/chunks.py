"""The chunk files of a resumable extraction (`<out>.partial/<split>/chunk_<k>.npz`): one atomic file
per `chunk_size` examples, the unit a rerun skips.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from flmoe_jax import atomic
from flmoe_jax.errors import StoreError
from flmoe_jax.features.host_batches import HostBatch
from flmoe_jax.features.plan import Plan


def chunk_path(partial: pathlib.Path, split: str, k: int) -> pathlib.Path:
  return partial / split / f"chunk_{k:05d}.npz"


class ChunkAccumulator:
  """Collects the device results of one chunk and writes them atomically."""

  def __init__(self, plan: Plan, split: str, k: int, dtype: str):
    self.plan, self.split, self.k, self.dtype = plan, split, k, dtype
    self.x: dict[str, list[np.ndarray]] = {m.name: [] for m in plan.raw.modalities}
    self.mask: dict[str, list[np.ndarray]] = {m.name: [] for m in plan.raw.modalities}
    self.labels: list[np.ndarray] = []
    self.ids: list[str] = []
    self.truncated = {m.name: 0 for m in plan.raw.modalities if m.kind == "text"}
    self.skipped: list[dict[str, str]] = []

  def add(self, batch: HostBatch, outs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    n = len(batch.ids)
    for name, (x, mask) in outs.items():
      self.x[name].append(x[:n])
      self.mask[name].append(mask[:n])
    if n:
      self.labels.append(batch.labels)
    self.ids += batch.ids
    for name, c in batch.truncated.items():
      self.truncated[name] += c
    self.skipped += batch.failures

  def write(self, partial: pathlib.Path) -> None:
    arrays = {}
    for m in self.plan.raw.modalities:
      enc = self.plan.encoders[m.name]
      xs, ms = self.x[m.name], self.mask[m.name]
      # Text batches have different bucket lengths: pad within the chunk to its longest (zeros, mask
      # False).
      t = max([a.shape[1] for a in xs], default=1)
      x = np.zeros((len(self.ids), t, enc.hidden_size), self.dtype)
      mask = np.zeros((len(self.ids), t), bool)
      row = 0
      for a, b in zip(xs, ms):
        x[row : row + len(a), : a.shape[1]] = a
        mask[row : row + len(a), : b.shape[1]] = b
        row += len(a)
      arrays[f"x_{m.name}"], arrays[f"mask_{m.name}"] = x, mask
    task = self.plan.raw.task
    empty = np.zeros((0, task.num_classes) if task.type == "multilabel" else (0,))
    arrays["labels"] = np.concatenate(self.labels) if self.labels else empty
    arrays["ids"] = np.array(self.ids, dtype=str)
    meta = {
      "split": self.split,
      "chunk": self.k,
      "rows": len(self.ids),
      "truncated": self.truncated,
      "skipped": self.skipped,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    path = chunk_path(partial, self.split, self.k)
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())


def read_chunk_meta(path: pathlib.Path) -> dict[str, Any]:
  try:
    with np.load(path, allow_pickle=False) as z:
      return json.loads(str(z["meta"]))
  except (OSError, ValueError, KeyError) as e:
    raise StoreError(f"{path}: unreadable chunk ({e}); delete it to recompute it") from None
