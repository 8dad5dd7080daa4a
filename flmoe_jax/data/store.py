"""The feature store: frozen-encoder token/patch features on disk, the input of every stage.

Layout (format `flmoe-feature-store`, version 1; see docs/feature_store.md):

```
<store>/manifest.json                format, version, modalities, task, splits {name: count}, dtype
<store>/<split>/<modality>.npy       float16|float32 [N, T_m, D_m]   (memory-mapped on read)
<store>/<split>/<modality>_mask.npy  bool [N, T_m]                   (True = real token)
<store>/<split>/labels.npy           int32 [N] (multiclass/binary) or uint8 [N, C] (multilabel)
<store>/<split>/ids.json             sample ids in row order
<store>/stats/<modality>_mean.npy    float32 [D_m], train-split mean over valid tokens
```

Writing is atomic: everything goes to a temporary sibling folder, `manifest.json` is written last, and the
folder is renamed into place, so a crash never leaves a store that looks complete. Reading validates every
file against the manifest before any array is touched, and batches have a fixed shape (the last one is padded
with zero-weight rows) so that a jitted step compiles once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from flmoe_jax import atomic, choices
from flmoe_jax.errors import StoreError

FORMAT_NAME = "flmoe-feature-store"
FORMAT_VERSION = 1
TASK_TYPES = ("multilabel", "multiclass", "binary")
MODALITY_KINDS = ("tokens", "patches")
FEATURE_DTYPES = choices.FEATURE_DTYPES
_CHUNK = (
  1024  # rows per chunk when scanning a split (mean, NaN check): bounded memory on big stores
)


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
  """One input modality of a store.

  Attributes:
    name: modality name, also the file stem (`text`, `image`, `screenshot`, ...).
    dim: feature dimension D_m of the frozen encoder's output.
    max_len: padded sequence length T_m.
    kind: `tokens` (text-like: position 0 is a special token, padding allowed) or `patches`.
    encoder: the encoder that produced the features (model id or `synthetic`).
  """

  name: str
  dim: int
  max_len: int
  kind: str = "tokens"
  encoder: str = ""

  def __post_init__(self):
    if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
      raise StoreError(f"modality name {self.name!r} must be a non-empty alphanumeric name")
    if self.kind not in MODALITY_KINDS:
      raise StoreError(f"modality {self.name!r}: kind {self.kind!r} not in {MODALITY_KINDS}")
    if int(self.dim) <= 0 or int(self.max_len) <= 0:
      raise StoreError(f"modality {self.name!r}: dim and max_len must be positive")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """The prediction task of a store.

  Attributes:
    type: `multilabel` (labels uint8 [N, C]), `multiclass` or `binary` (labels int32 [N]).
    num_classes: C (2 for binary).
    class_names: C names.
  """

  type: str
  num_classes: int
  class_names: tuple[str, ...] = ()

  def __post_init__(self):
    if self.type not in TASK_TYPES:
      raise StoreError(f"task type {self.type!r} not in {TASK_TYPES}")
    if self.type == "binary" and self.num_classes != 2:
      raise StoreError("a binary task has num_classes = 2")
    names = tuple(self.class_names) or tuple(f"class_{i}" for i in range(self.num_classes))
    if len(names) != self.num_classes:
      raise StoreError(f"{len(names)} class names for {self.num_classes} classes")
    object.__setattr__(self, "class_names", names)


@dataclasses.dataclass
class SplitArrays:
  """The in-memory content of one split, for `write_store`.

  Attributes:
    features: {modality: float [N, T_m, D_m]}.
    masks: {modality: bool [N, T_m]}.
    labels: int [N] or uint8 [N, C].
    ids: N sample ids.
  """

  features: Mapping[str, np.ndarray]
  masks: Mapping[str, np.ndarray]
  labels: np.ndarray
  ids: Sequence[str]


# ----------------------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------------------


def is_store(path: str | os.PathLike) -> bool:
  """Whether `path` is a feature store folder (its manifest names this format)."""
  manifest = pathlib.Path(path) / "manifest.json"
  if not manifest.is_file():
    return False
  try:
    return json.loads(manifest.read_text()).get("format") == FORMAT_NAME
  except (OSError, ValueError, AttributeError):
    return False


def check_store_target(path: str | os.PathLike, *, overwrite: bool) -> bool:
  """Checks that a new store may be written at `path`, before anything is written.

  Nothing that this project did not create is ever replaced: the path must be missing, an empty
  folder, or (with `overwrite`) a feature store.

  Args:
    path: where the store will go.
    overwrite: whether an existing feature store may be replaced.

  Returns:
    True when `path` holds a feature store that will be replaced.

  Raises:
    StoreError: `path` is a file or a non-empty folder that is not a store, or a store without
      `overwrite`.
  """
  p = pathlib.Path(path)
  if not p.exists() and not p.is_symlink():
    return False
  if is_store(p) and not p.is_symlink():
    if not overwrite:
      raise StoreError(f"{p} already holds a feature store (pass --overwrite to replace it)")
    return True
  if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
    return False
  what = "a file, not a feature store" if p.is_file() else "a folder that is not a feature store"
  raise StoreError(
    f"{p} exists and is {what}; refusing to replace it (choose another output path; --overwrite "
    "replaces only a feature store)"
  )


def _remove_stale_tmp(path: pathlib.Path) -> None:
  """Removes temporary folders of earlier writers of `path` that were killed (their pid is gone)."""
  for tmp in path.parent.glob(f".{path.name}.tmp-*"):
    pid = tmp.name.rsplit(".tmp-", 1)[1].split("-")[0]
    if tmp.is_dir() and pid.isdigit() and not _alive(int(pid)):
      shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _label_spec(task: TaskSpec, n: int) -> tuple[tuple[int, ...], np.dtype]:
  if task.type == "multilabel":
    return (n, task.num_classes), np.dtype(np.uint8)
  return (n,), np.dtype(np.int32)


class StoreWriter:
  """Writes a store atomically: temporary folder, manifest last, then rename.

  Use `add_split` for splits that fit in memory, or `allocate_split` to fill memory-mapped arrays chunk by
  chunk (feature extraction), then `finalize`. Nothing is visible at `path` before `finalize` returns.

  Args:
    path: the final store folder.
    modalities: the modalities, in model input order.
    task: the task.
    dtype: `float16` (default, half the disk) or `float32`.
    overwrite: replace an existing store at `path` (only once the new one is complete).
  """

  def __init__(
    self,
    path: str | os.PathLike,
    *,
    modalities: Sequence[ModalitySpec],
    task: TaskSpec,
    dtype: str = "float16",
    overwrite: bool = False,
  ):
    self.path = pathlib.Path(path)
    if dtype not in FEATURE_DTYPES:
      raise StoreError(f"store dtype {dtype!r} not in {FEATURE_DTYPES}")
    check_store_target(self.path, overwrite=overwrite)
    if len({m.name for m in modalities}) != len(modalities) or len(modalities) < 1:
      raise StoreError("modality names must be unique and at least one modality is needed")
    self.modalities = tuple(modalities)
    self.task = task
    self.dtype = dtype
    self.overwrite = overwrite
    _remove_stale_tmp(self.path)
    # The writer's pid is in the name, so that a later writer can tell a folder left by a kill.
    self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    self.tmp.mkdir(parents=True)
    self.counts: dict[str, int] = {}

  def allocate_split(self, split: str, n: int) -> dict[str, np.ndarray]:
    """Creates the split's files as writable memory maps, for chunked filling.

    Args:
      split: split name.
      n: number of examples N.

    Returns:
      {`<modality>`: [N, T, D], `<modality>_mask`: bool [N, T], `labels`: ...} memory maps; the caller
      fills them and then calls `set_ids`.
    """
    if split in self.counts:
      raise StoreError(f"split {split!r} written twice")
    d = self.tmp / split
    d.mkdir()
    out = {}
    for m in self.modalities:
      out[m.name] = np.lib.format.open_memmap(
        d / f"{m.name}.npy", mode="w+", dtype=self.dtype, shape=(n, m.max_len, m.dim)
      )
      out[f"{m.name}_mask"] = np.lib.format.open_memmap(
        d / f"{m.name}_mask.npy", mode="w+", dtype=np.bool_, shape=(n, m.max_len)
      )
    shape, dt = _label_spec(self.task, n)
    out["labels"] = np.lib.format.open_memmap(d / "labels.npy", mode="w+", dtype=dt, shape=shape)
    self.counts[split] = n
    return out

  def set_ids(self, split: str, ids: Sequence[str]) -> None:
    """Writes the sample ids of a split (row order)."""
    ids = [str(i) for i in ids]
    if len(ids) != self.counts[split]:
      raise StoreError(f"split {split!r}: {len(ids)} ids for {self.counts[split]} rows")
    if len(set(ids)) != len(ids):
      raise StoreError(f"split {split!r}: sample ids are not unique")
    (self.tmp / split / "ids.json").write_text(json.dumps(ids))

  def add_split(self, split: str, arrays: SplitArrays) -> None:
    """Writes one in-memory split (validated against the modality specs)."""
    n = len(arrays.ids)
    for m in self.modalities:
      if m.name not in arrays.features or m.name not in arrays.masks:
        raise StoreError(f"split {split!r}: modality {m.name!r} missing")
      x, mask = np.asarray(arrays.features[m.name]), np.asarray(arrays.masks[m.name])
      if x.shape != (n, m.max_len, m.dim):
        raise StoreError(
          f"split {split!r}: {m.name} has shape {x.shape}, want {(n, m.max_len, m.dim)}"
        )
      if mask.shape != (n, m.max_len):
        raise StoreError(
          f"split {split!r}: {m.name}_mask has shape {mask.shape}, want {(n, m.max_len)}"
        )
      if not np.isfinite(x).all():
        raise StoreError(f"split {split!r}: {m.name} features contain NaN or Inf")
    labels = np.asarray(arrays.labels)
    shape, dt = _label_spec(self.task, n)
    if labels.shape != shape:
      raise StoreError(f"split {split!r}: labels have shape {labels.shape}, want {shape}")
    _check_label_values(labels, self.task, f"split {split!r}")
    out = self.allocate_split(split, n)
    for m in self.modalities:
      out[m.name][...] = np.asarray(arrays.features[m.name], dtype=self.dtype)
      out[f"{m.name}_mask"][...] = np.asarray(arrays.masks[m.name], dtype=bool)
    out["labels"][...] = labels.astype(dt)
    for a in out.values():
      a.flush()
    del out
    self.set_ids(split, arrays.ids)

  def finalize(
    self,
    *,
    stats: Mapping[str, np.ndarray] | None = None,
    extra_files: Mapping[str, Any] | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
  ) -> pathlib.Path:
    """Writes stats, extra files and the manifest (last), then moves the store into place.

    Args:
      stats: {modality: float32 [D]} mean vectors; computed from the `train` split when None.
      extra_files: {file name: JSON-able object} written into the store (e.g. `ground_truth.json`).
      extra_manifest: extra manifest keys (provenance, skipped ids, ...).

    Returns:
      The final store path.
    """
    if "train" not in self.counts and stats is None:
      raise StoreError("a store needs a 'train' split (or explicit stats)")
    (self.tmp / "stats").mkdir(exist_ok=True)
    for m in self.modalities:
      mean = (
        np.asarray(stats[m.name], np.float32)
        if stats is not None
        else _masked_mean(
          np.load(self.tmp / "train" / f"{m.name}.npy", mmap_mode="r"),
          np.load(self.tmp / "train" / f"{m.name}_mask.npy", mmap_mode="r"),
        )
      )
      if mean.shape != (m.dim,):
        raise StoreError(f"stats for {m.name!r} have shape {mean.shape}, want {(m.dim,)}")
      np.save(self.tmp / "stats" / f"{m.name}_mean.npy", mean)
    for name, obj in (extra_files or {}).items():
      (self.tmp / name).write_text(json.dumps(obj, indent=1, default=atomic.json_default))
    manifest = {
      "format": FORMAT_NAME,
      "version": FORMAT_VERSION,
      "modalities": [dataclasses.asdict(m) for m in self.modalities],
      "task": {
        "type": self.task.type,
        "num_classes": self.task.num_classes,
        "class_names": list(self.task.class_names),
      },
      "splits": dict(self.counts),
      "dtype": self.dtype,
      **dict(extra_manifest or {}),
    }
    tmp_manifest = self.tmp / "manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=1, default=atomic.json_default))
    os.replace(tmp_manifest, self.tmp / "manifest.json")
    # Swap into place. Checked again here: something may have appeared at the path while we wrote.
    # Only a feature store (which this project made) is ever moved aside and removed, and only once
    # the new one is complete; an empty folder is replaced by the rename itself.
    existed = check_store_target(self.path, overwrite=self.overwrite)
    old = None
    if existed:
      old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
      os.replace(self.path, old)
    os.replace(self.tmp, self.path)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
    return self.path

  def abort(self) -> None:
    """Removes the temporary folder (nothing was published)."""
    shutil.rmtree(self.tmp, ignore_errors=True)


def write_store(
  path: str | os.PathLike,
  *,
  modalities: Sequence[ModalitySpec],
  task: TaskSpec,
  splits: Mapping[str, SplitArrays],
  dtype: str = "float16",
  overwrite: bool = False,
  extra_files: Mapping[str, Any] | None = None,
  extra_manifest: Mapping[str, Any] | None = None,
) -> pathlib.Path:
  """Writes a whole in-memory dataset as a feature store, atomically.

  Args:
    path: store folder.
    modalities: modality specs in model input order.
    task: task spec.
    splits: {split name: SplitArrays}; must contain `train` (its means become the mean-fill baseline).
    dtype: feature dtype on disk, `float16` or `float32`.
    overwrite: replace an existing store.
    extra_files: JSON files to add (e.g. `ground_truth.json`).
    extra_manifest: extra manifest keys.

  Returns:
    The store path.
  """
  writer = StoreWriter(path, modalities=modalities, task=task, dtype=dtype, overwrite=overwrite)
  try:
    for name, arrays in splits.items():
      writer.add_split(name, arrays)
    return writer.finalize(extra_files=extra_files, extra_manifest=extra_manifest)
  except BaseException:
    writer.abort()
    raise


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Mean over valid tokens, in chunks. x: [N, T, D], mask: [N, T] -> float32 [D]."""
  total = np.zeros(x.shape[-1], np.float64)
  count = 0
  for s in range(0, x.shape[0], _CHUNK):
    xb = np.asarray(x[s : s + _CHUNK], np.float64)
    mb = np.asarray(mask[s : s + _CHUNK], bool)
    total += (xb * mb[..., None]).sum(axis=(0, 1))
    count += int(mb.sum())
  if count == 0:
    raise StoreError("the train split has no valid tokens for a modality")
  return (total / count).astype(np.float32)


def _check_label_values(labels: np.ndarray, task: TaskSpec, where: str) -> None:
  if labels.size == 0:
    return
  if task.type == "multilabel":
    if labels.min() < 0 or labels.max() > 1:
      raise StoreError(f"{where}: multilabel labels must be 0/1")
  elif labels.min() < 0 or labels.max() >= task.num_classes:
    raise StoreError(f"{where}: labels outside [0, {task.num_classes})")


# ----------------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Split:
  """A validated, memory-mapped split.

  Attributes:
    name: split name.
    features: per modality (manifest order), [N, T_m, D_m] memory maps.
    masks: per modality, bool [N, T_m].
    labels: [N] int32 or [N, C] uint8.
    ids: N sample ids.
  """

  name: str
  features: tuple[np.ndarray, ...]
  masks: tuple[np.ndarray, ...]
  labels: np.ndarray
  ids: tuple[str, ...]

  @property
  def num_examples(self) -> int:
    return len(self.ids)


class FeatureStore:
  """A read-only feature store, validated against its manifest on open.

  Args:
    path: the store folder.

  Raises:
    StoreError: naming the file and what is wrong, if anything disagrees with the manifest.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    mpath = self.path / "manifest.json"
    if self.path.is_file():
      raise StoreError(f"{self.path} is a file, not a feature store folder")
    if not self.path.is_dir():
      raise StoreError(f"no feature store at {self.path} (folder not found)")
    if not mpath.is_file():
      raise StoreError(f"{mpath}: missing; {self.path} is not a complete feature store")
    try:
      manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
      raise StoreError(f"{mpath}: not valid JSON ({e})") from None
    self.manifest = manifest
    try:
      if manifest.get("format") != FORMAT_NAME:
        raise StoreError(f"{mpath}: format {manifest.get('format')!r}, want {FORMAT_NAME!r}")
      if manifest.get("version") != FORMAT_VERSION:
        raise StoreError(
          f"{mpath}: format version {manifest.get('version')!r}, this reader knows {FORMAT_VERSION}"
        )
      self.modalities = tuple(ModalitySpec(**m) for m in manifest["modalities"])
      self.task = TaskSpec(
        type=manifest["task"]["type"],
        num_classes=int(manifest["task"]["num_classes"]),
        class_names=tuple(manifest["task"].get("class_names") or ()),
      )
      self.counts = {str(k): int(v) for k, v in manifest["splits"].items()}
      self.dtype = manifest["dtype"]
    except (KeyError, TypeError) as e:
      raise StoreError(f"{mpath}: malformed manifest ({type(e).__name__}: {e})") from None
    if self.dtype not in FEATURE_DTYPES:
      raise StoreError(f"{mpath}: dtype {self.dtype!r} not in {FEATURE_DTYPES}")
    self._splits: dict[str, Split] = {}
    self._lock = threading.Lock()
    self._means = tuple(self._load_mean(m) for m in self.modalities)

  # -- metadata ---------------------------------------------------------------------------------------
  @property
  def modality_names(self) -> tuple[str, ...]:
    return tuple(m.name for m in self.modalities)

  @property
  def split_names(self) -> tuple[str, ...]:
    return tuple(self.counts)

  def means(self) -> tuple[np.ndarray, ...]:
    """Train-split mean feature per modality (manifest order), float32 [D_m]: the mean-fill baseline."""
    return self._means

  def ground_truth(self) -> dict | None:
    """The planted-interaction ground truth of a synthetic store, or None."""
    p = self.path / "ground_truth.json"
    return json.loads(p.read_text()) if p.is_file() else None

  def planted_bits(self, split: str) -> dict[str, np.ndarray] | None:
    """A synthetic store's planted bits of every example of `split` ({bit name: int8 ±1 [N]}), or
    None (not a synthetic store, or one written before the bits were stored)."""
    p = self.path / "planted_bits.json"
    if not p.is_file():
      return None
    bits = json.loads(p.read_text()).get(split)
    if bits is None:
      return None
    n = self.split(split).num_examples
    out = {b: np.asarray(v, np.int8) for b, v in bits.items()}
    bad = [b for b, v in out.items() if v.shape != (n,)]
    if bad:
      raise StoreError(f"{p}: bits {bad} of split {split!r} do not have {n} values")
    return out

  def _load_mean(self, m: ModalitySpec) -> np.ndarray:
    p = self.path / "stats" / f"{m.name}_mean.npy"
    a = self._load(p, mmap=False)
    if a.shape != (m.dim,) or a.dtype != np.float32:
      raise StoreError(f"{p}: shape {a.shape} dtype {a.dtype}, want ({m.dim},) float32")
    if not np.isfinite(a).all():
      raise StoreError(f"{p}: contains NaN or Inf")
    return a

  @staticmethod
  def _load(p: pathlib.Path, mmap: bool = True) -> np.ndarray:
    if not p.is_file():
      raise StoreError(f"{p}: missing")
    try:
      return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
      raise StoreError(f"{p}: unreadable ({e})") from None

  # -- splits -----------------------------------------------------------------------------------------
  def split(self, name: str) -> Split:
    """Opens (and validates) one split.

    Args:
      name: split name.

    Returns:
      The memory-mapped split.

    Raises:
      StoreError: if the split is absent or any file disagrees with the manifest.
    """
    with self._lock:
      if name not in self._splits:
        self._splits[name] = self._open_split(name)
      return self._splits[name]

  def _open_split(self, name: str) -> Split:
    if name not in self.counts:
      raise StoreError(f"{self.path}: no split {name!r} (the store has {sorted(self.counts)})")
    n, d = self.counts[name], self.path / name
    feats, masks = [], []
    for m in self.modalities:
      x = self._load(d / f"{m.name}.npy")
      if x.shape != (n, m.max_len, m.dim):
        raise StoreError(
          f"{d / (m.name + '.npy')}: shape {x.shape}, manifest says {(n, m.max_len, m.dim)}"
        )
      if x.dtype != np.dtype(self.dtype):
        raise StoreError(f"{d / (m.name + '.npy')}: dtype {x.dtype}, manifest says {self.dtype}")
      mk = self._load(d / f"{m.name}_mask.npy")
      if mk.shape != (n, m.max_len) or mk.dtype != np.bool_:
        raise StoreError(
          f"{d / (m.name + '_mask.npy')}: shape {mk.shape} dtype {mk.dtype}, want {(n, m.max_len)} bool"
        )
      feats.append(x)
      masks.append(mk)
    labels = self._load(d / "labels.npy")
    shape, dt = _label_spec(self.task, n)
    if labels.shape != shape or labels.dtype != dt:
      raise StoreError(
        f"{d / 'labels.npy'}: shape {labels.shape} dtype {labels.dtype}, want {shape} {dt}"
      )
    _check_label_values(np.asarray(labels), self.task, str(d / "labels.npy"))
    ids_path = d / "ids.json"
    if not ids_path.is_file():
      raise StoreError(f"{ids_path}: missing")
    try:
      ids = tuple(json.loads(ids_path.read_text()))
    except json.JSONDecodeError as e:
      raise StoreError(f"{ids_path}: not valid JSON ({e})") from None
    if len(ids) != n:
      raise StoreError(f"{ids_path}: {len(ids)} ids, manifest says {n} examples")
    return Split(name, tuple(feats), tuple(masks), labels, ids)

  def check_finite(self, name: str) -> None:
    """Scans a whole split for NaN/Inf (chunked); raises StoreError naming the file and first row."""
    s = self.split(name)
    for m, x in zip(self.modalities, s.features):
      for start in range(0, x.shape[0], _CHUNK):
        bad = ~np.isfinite(np.asarray(x[start : start + _CHUNK])).all(axis=(1, 2))
        if bad.any():
          row = start + int(np.argmax(bad))
          raise StoreError(
            f"{self.path / name / (m.name + '.npy')}: NaN or Inf in features (first at row {row}, "
            f"id {s.ids[row]!r})"
          )

  def batches(
    self,
    split: str,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    limit: int | None = None,
    rows: tuple[int, int] | None = None,
  ) -> Iterator[dict[str, Any]]:
    """Yields fixed-shape host batches of one split.

    Args:
      split: split name.
      batch_size: B.
      shuffle: shuffle rows with a key derived from (seed, epoch): the same order on every machine.
      seed: shuffle seed.
      epoch: epoch number, folded into the shuffle.
      drop_remainder: drop the last incomplete batch instead of padding it.
      limit: use only the first `limit` rows (subsampling for demos).
      rows: (lo, hi): only these rows of each (padded) batch, `hi - lo` of them; one process's
        share of a global batch (`sharding.local_rows`). None: the whole batch.

    Yields:
      {"x": tuple of [B, T_m, D_m] (store dtype), "mask": tuple of bool [B, T_m],
       "label": [B] int32 or [B, C] uint8, "weight": float32 [B] (0 on padding rows),
       "index": int32 [B] (row in the split, -1 on padding rows)}.

    Raises:
      StoreError: if a batch holds NaN/Inf features (naming the file and row).
    """
    s = self.split(split)
    n = s.num_examples if limit is None else min(limit, s.num_examples)
    order = np.arange(n)
    if shuffle:
      order = np.random.default_rng([seed, epoch]).permutation(n)
    stop = (n // batch_size) * batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
      idx = order[start : start + batch_size]
      # Sorted reads are much faster on memory maps; the order inside a batch does not matter.
      idx = np.sort(idx)
      if rows is None:
        yield self._gather(s, idx, batch_size)
      else:  # padding rows come last, so this is the slice [lo, hi) of the padded batch
        yield self._gather(s, idx[rows[0] : rows[1]], rows[1] - rows[0])

  def gather(self, split: str, index: np.ndarray) -> dict[str, Any]:
    """One batch of the given rows (same layout as `batches`, no padding)."""
    s = self.split(split)
    index = np.asarray(index)
    return self._gather(s, index, len(index))

  def _gather(self, s: Split, idx: np.ndarray, batch_size: int) -> dict[str, Any]:
    pad = batch_size - len(idx)
    xs, ms = [], []
    for m, x, mk in zip(self.modalities, s.features, s.masks):
      xb = np.asarray(x[idx])
      if not np.isfinite(xb).all():
        row = int(idx[np.argmax(~np.isfinite(xb).all(axis=(1, 2)))])
        raise StoreError(
          f"{self.path / s.name / (m.name + '.npy')}: NaN or Inf in features (row {row}, id {s.ids[row]!r})"
        )
      xs.append(_pad(xb, pad))
      ms.append(_pad(np.asarray(mk[idx]), pad))
    return {
      "x": tuple(xs),
      "mask": tuple(ms),
      "label": _pad(np.asarray(s.labels[idx]), pad),
      "weight": _pad(np.ones(len(idx), np.float32), pad),
      "index": np.concatenate([idx.astype(np.int32), -np.ones(pad, np.int32)]),
    }


def _pad(a: np.ndarray, pad: int) -> np.ndarray:
  if pad == 0:
    return a
  return np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])


def open_store(path: str | os.PathLike) -> FeatureStore:
  """Opens and validates a feature store (see `FeatureStore`)."""
  return FeatureStore(path)
