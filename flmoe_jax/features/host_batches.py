"""Host batches of an extraction, prepared in a background thread: tokenised texts, decoded and
resized images (each distinct image once), labels, and the unreadable images found on the way.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
import time
from collections.abc import Iterator

import numpy as np

from flmoe_jax.data.raw.base import RawExample
from flmoe_jax.errors import DatasetError
from flmoe_jax.features.encoders import UnreadableImageError, load_pil
from flmoe_jax.features.plan import Plan
from flmoe_jax.handoff import Handoff

PREFETCH = 2  # host batches prepared ahead of the device


@dataclasses.dataclass
class HostBatch:
  split: str
  chunk: int
  last_in_chunk: bool
  ids: list[str]  # kept examples only
  labels: np.ndarray  # [n_kept] or [n_kept, C]
  inputs: dict[str, dict[str, np.ndarray]]  # modality -> encoder inputs, padded to the global batch
  truncated: dict[str, int]  # modality -> texts cut in this batch
  failures: list[dict[str, str]]  # {"split", "id", "modality", "reason"}
  size: int  # examples looked at (kept + dropped)
  # Image modality -> int [n_kept]: the row of each kept example among the batch's distinct images
  # (examples that share an image file, e.g. VQA questions, are encoded once).
  gather: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def label_array(ex: RawExample, task) -> np.ndarray:
  y = np.asarray(ex.label)
  if task.type == "multilabel":
    if y.shape != (task.num_classes,) or not np.isin(y, (0, 1)).all():
      raise DatasetError(
        f"example {ex.id!r}: multilabel label must be 0/1 of shape ({task.num_classes},)"
      )
    return y.astype(np.uint8)
  if y.ndim != 0 or not np.issubdtype(y.dtype, np.integer) or not 0 <= int(y) < task.num_classes:
    raise DatasetError(
      f"example {ex.id!r}: label {ex.label!r} is not a class in [0, {task.num_classes})"
    )
  return y.astype(np.int32)


def check_image(image) -> None:
  load_pil(image)  # raises UnreadableImageError


class Producer:
  """Prepares host batches of the pending chunks in a background thread (bounded queue)."""

  def __init__(
    self,
    plan: Plan,
    work: list[tuple[str, int]],
    *,
    batch_size: int,
    global_batch: int,
    text_buckets,
    on_error: str,
    num_workers: int,
    num_devices: int = 1,
  ):
    self.plan = plan
    self.work = work
    self.batch_size = batch_size
    self.global_batch = global_batch
    self.num_devices = num_devices
    self.text_buckets = text_buckets
    self.on_error = on_error
    self.handoff = Handoff(PREFETCH)
    self.prepare_s = 0.0  # wall seconds this thread spent preparing batches (read after close)
    # Set by the consumer after the first unreadable image in fail mode: from then on only decode
    # images (to list every bad one) and skip tokenising / preprocessing.
    self.scan_only = threading.Event()
    self.pool = concurrent.futures.ThreadPoolExecutor(
      max(1, num_workers), thread_name_prefix="flmoe-img"
    )
    self.thread = threading.Thread(target=self._run, name="flmoe-extract-prefetch", daemon=True)

  def start(self) -> Producer:
    self.thread.start()
    return self

  def close(self) -> None:
    self.handoff.close(self.thread)
    self.pool.shutdown(wait=True, cancel_futures=True)

  def __iter__(self) -> Iterator[HostBatch]:
    return iter(self.handoff)

  def _run(self) -> None:
    try:
      for split, k in self.work:
        examples = self.plan.splits[split]
        start, stop = k * self.plan.chunk_size, min((k + 1) * self.plan.chunk_size, len(examples))
        for b in range(start, stop, self.batch_size):
          t = time.perf_counter()
          batch = self._prepare(split, k, examples[b : min(b + self.batch_size, stop)])
          self.prepare_s += time.perf_counter() - t
          batch.last_in_chunk = b + self.batch_size >= stop
          if not self.handoff.put(batch):
            return
      self.handoff.finish()
    except BaseException as e:  # noqa: BLE001 - re-raised in the consumer thread
      self.handoff.fail(e)

  def _prepare(self, split: str, k: int, exs: list[RawExample]) -> HostBatch:
    plan, scan = self.plan, self.scan_only.is_set()
    failures: list[dict[str, str]] = []
    bad: set[int] = set()
    pixels: dict[str, list] = {}
    sources: dict[str, list] = {}  # modality -> per example, the index of its distinct image
    for m in plan.raw.modalities:
      if m.kind != "image":
        continue
      enc = plan.encoders[m.name]
      fn = check_image if scan else enc.load_pixels
      # Examples naming the same image file share one decode (and one encoding, see `gather`).
      first: dict[str, int] = {}
      sources[m.name] = []
      for i, ex in enumerate(exs):
        image = ex.inputs.get(m.name)
        key = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
        sources[m.name].append(first.setdefault(key, i) if key is not None else i)
      futures = {
        i: self.pool.submit(fn, exs[i].inputs.get(m.name)) for i in sorted(set(sources[m.name]))
      }
      pixels[m.name] = []
      for i, ex in enumerate(exs):
        try:
          pixels[m.name].append(futures[sources[m.name][i]].result())
        except UnreadableImageError as e:
          failures.append({"split": split, "id": str(ex.id), "modality": m.name, "reason": str(e)})
          bad.add(i)
          pixels[m.name].append(None)
    keep = [i for i in range(len(exs)) if i not in bad]
    batch = HostBatch(
      split, k, False, [str(exs[i].id) for i in keep], np.zeros(0), {}, {}, failures, len(exs)
    )
    if scan or (failures and self.on_error == "fail"):
      return batch  # nothing will be encoded
    if not keep:
      return batch  # every example of the batch was dropped (skip mode)
    batch.labels = np.stack([label_array(exs[i], plan.raw.task) for i in keep])
    pad = self.global_batch - len(keep)
    for m in plan.raw.modalities:
      enc = plan.encoders[m.name]
      if m.kind == "text":
        texts = []
        for i in keep:
          t = exs[i].inputs.get(m.name)
          if t is not None and not isinstance(t, str):
            raise DatasetError(f"example {exs[i].id!r}: modality {m.name!r} is not a string")
          texts.append(t)
        tok = enc.tokenize(texts, buckets=self.text_buckets)
        batch.truncated[m.name] = int(tok["truncated"].sum())
        ids = np.pad(tok["input_ids"], ((0, pad), (0, 0)), constant_values=enc.pad_id)
        mask = np.pad(tok["attention_mask"], ((0, pad), (0, 0)))
        batch.inputs[m.name] = {"input_ids": ids, "attention_mask": mask}
      else:
        distinct = sorted({sources[m.name][i] for i in keep})
        row = {src: j for j, src in enumerate(distinct)}
        batch.gather[m.name] = np.array([row[sources[m.name][i]] for i in keep], np.int64)
        s, rows = enc.image_size, self._image_rows(len(distinct))
        if enc.pixel_format == "uint8":  # normalised on the device
          key, px = "pixels", np.zeros((rows, s, s, 3), np.uint8)
        else:
          key, px = "pixel_values", np.zeros((rows, 3, s, s), np.float32)
        for j, src in enumerate(distinct):
          px[j] = pixels[m.name][src]
        batch.inputs[m.name] = {key: px}
    return batch

  def _image_rows(self, n: int) -> int:
    """Rows of an image batch holding n distinct images: the global batch or a half, quarter or
    eighth of it (a multiple of the device count), so at most four shapes are ever compiled."""
    rows = self.global_batch
    for _ in range(3):
      half = rows // 2
      if rows % 2 or half < n or half % self.num_devices:
        break
      rows = half
    return rows
