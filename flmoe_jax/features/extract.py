"""Batched, sharded, resumable extraction of frozen-encoder features into a feature store.

`extract_features(raw, out, text_encoder=..., image_encoder=...)` runs every example of a
`RawDataset` through the frozen encoders and writes the token/patch states as a feature store
(docs/feature_store.md).

How it runs:

* **Sharded.** Each batch is padded to a multiple of the local device count and split over a 1-D
  `data` mesh (`NamedSharding`); encoder parameters are replicated once. One jit per encoder and
  padded shape.
* **Shared images.** Examples of a batch that name the same image file (VQA: ~10 questions an image)
  decode and encode it once: the image batch holds the distinct images, padded to the global batch or
  a half, quarter or eighth of it (at most four compilations), and each example gathers its row.
* **Text buckets.** A text batch is padded to the smallest of `text_buckets` that holds its longest
  text (one compilation per bucket), then stored at the encoder's `max_len` with zeros and mask
  False beyond the text. Texts longer than `max_len` tokens are cut and counted (manifest
  `extraction.truncated`).
* **Prefetch.** A background thread prepares the next host batches (tokenising, decoding and
  resizing images in a small thread pool) while the devices compute; device results are fetched one
  batch late so dispatch, transfer and compute overlap.
* **Resumable.** Results go to `<out>.partial/` as per-split chunk files `chunk_<k>.npz` of
  `chunk_size` examples, each written atomically (temporary name, then `os.replace`), next to
  `progress.json`, which records the extraction's fingerprint (encoder identity, hidden size,
  sequence length, compute dtype, a hash of the weights, the data's ids). A rerun skips the chunks
  present and refuses a partial folder or an existing store made with a different encoder. The store
  is then assembled with `StoreWriter` (atomic, train-split means computed over valid tokens) and
  the partial folder removed.
* **Unreadable images.** `on_error="fail"` (default) stops encoding at the first bad image, scans
  the rest and fails listing every bad image (full list in `<out>.partial/unreadable.json`);
  `on_error="skip"` drops the examples with a bad image and records them in the manifest
  (`extraction.skipped`).

The extractor is single-process (it uses the local devices of one host).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flmoe_jax import atomic
from flmoe_jax.data.raw.base import RawDataset
from flmoe_jax.data.store import ModalitySpec, StoreWriter, check_store_target
from flmoe_jax.errors import DatasetError, EncoderError, StoreError
from flmoe_jax.features import config as config_lib
from flmoe_jax.features.chunks import ChunkAccumulator, chunk_path, read_chunk_meta
from flmoe_jax.features.config import ExtractionOptions, FeaturesConfig
from flmoe_jax.features.encoders import ImageEncoder, TextEncoder
from flmoe_jax.features.host_batches import HostBatch, Producer
from flmoe_jax.features.plan import Plan, assign_encoders, difference, fingerprint, limited
from flmoe_jax.metrics import Progress

PARTIAL_FORMAT = "flmoe-extract-partial"
PARTIAL_VERSION = 1

# Fault-injection hook for tests: called as hook(split, chunk_index) after each chunk file is
# written.
_after_chunk_hook: Callable[[str, int], None] | None = None


@dataclasses.dataclass
class ExtractionTiming:
  """Where the encoding loop of an extraction spent its wall time (seconds).

  The loop dispatches a batch to the devices, then fetches the previous batch's features (so the
  devices compute while the host fetches and writes), while a producer thread prepares the next
  host batches. Whichever of `host_wait_s` and `device_wait_s` dominates bounds the extraction.

  Attributes:
    loop_s: the whole encoding loop.
    host_wait_s: waiting for the next host batch: nothing new for the devices (host-bound).
    device_wait_s: waiting for a batch's features from the devices (device-bound).
    write_s: gathering shared images' rows, chunk files, progress.
    prepare_s: the producer thread's time decoding, resizing and tokenising (overlaps the rest).
    batches: batches encoded.
    examples: examples encoded.
    text_tokens: real text tokens encoded (every text modality).
    text_slots: token positions the text encoder computed (the buckets' padded lengths, padded rows
      of the last batch included).
    text_slots_unbucketed: the positions it would have computed with every batch padded to max_len.
  """

  loop_s: float = 0.0
  host_wait_s: float = 0.0
  device_wait_s: float = 0.0
  write_s: float = 0.0
  prepare_s: float = 0.0
  batches: int = 0
  examples: int = 0
  text_tokens: int = 0
  text_slots: int = 0
  text_slots_unbucketed: int = 0

  def summary(self) -> str:
    """One line: each part's seconds and share of the loop; the text padding with and without buckets."""
    parts = ("host_wait_s", "device_wait_s", "write_s", "prepare_s")
    share = ", ".join(
      f"{k[:-2].replace('_', ' ')} {getattr(self, k):.1f} s "
      f"({100 * getattr(self, k) / max(self.loop_s, 1e-9):.0f}%)"
      for k in parts
    )
    line = f"encoding loop {self.loop_s:.1f} s: {share}"
    if self.text_slots:
      pad = 1 - self.text_tokens / self.text_slots
      flat = 1 - self.text_tokens / max(self.text_slots_unbucketed, 1)
      line += f"; text padding {100 * pad:.0f}% of computed tokens ({100 * flat:.0f}% unbucketed)"
    return line

  def count_text(self, mask: np.ndarray, max_len: int) -> None:
    """Adds one text batch: its attention mask [B, L] and the encoder's max_len."""
    self.text_tokens += int(mask.sum())
    self.text_slots += int(mask.size)
    self.text_slots_unbucketed += int(mask.shape[0]) * int(max_len)


def partial_dir(out: str | os.PathLike) -> pathlib.Path:
  """The work folder of an extraction into `out`: `<out>.partial`."""
  out = pathlib.Path(out)
  return out.parent / f"{out.name}.partial"


# --------------------------------------------------------------------------------------------------
# The extraction.
# --------------------------------------------------------------------------------------------------


def extract_features(
  raw: RawDataset,
  out: str | os.PathLike,
  *,
  text_encoder: TextEncoder | Mapping[str, TextEncoder] | None = None,
  image_encoder: ImageEncoder | Mapping[str, ImageEncoder] | None = None,
  options: ExtractionOptions | None = None,
  resume: bool = True,
  overwrite: bool = False,
  progress: bool = True,
  devices: Sequence[Any] | None = None,
  timing: ExtractionTiming | None = None,
) -> pathlib.Path:
  """Encodes a raw dataset with frozen encoders and writes a feature store at `out`.

  Example:
    >>> extract_features(raw, "runs/stores/toy", text_encoder=text, image_encoder=image,
    ...                  options=ExtractionOptions(batch_size=64, limit_per_split=1000))

  Args:
    raw: the dataset (`flmoe_jax.data.raw.load_raw(...)`).
    out: the store folder to write.
    text_encoder: the encoder of every `text` modality (or {modality: encoder}).
    image_encoder: the encoder of every `image` modality, shared (ENRICO's screenshot and wireframe
      use the same frozen CLIP), or {modality: encoder}.
    options: batch size, storage dtype, text buckets, unreadable-image policy, per-split limit,
      chunk size and decoding threads (default `ExtractionOptions()`).
    resume: reuse the chunks of an interrupted run in `<out>.partial/` (False starts over).
    overwrite: replace an existing store at `out` that was made differently.
    progress: show a progress bar (samples/s, ETA) per split.
    devices: devices to shard over (default: all local devices).
    timing: filled with where the encoding loop spent its time (`ExtractionTiming`), if given.

  Returns:
    The store path. If `out` already holds a store of this exact extraction, it is returned
    untouched.

  Raises:
    EncoderError: a modality without an encoder, unreadable images (on_error="fail"), or a partial
      run made with a different encoder.
    StoreError: `out` holds a store made differently (unless `overwrite`).
    DatasetError: bad labels or inputs in the raw dataset.
  """
  out = pathlib.Path(out)
  partial = partial_dir(out)
  opts = options if options is not None else ExtractionOptions()
  if jax.process_count() > 1:
    raise EncoderError("feature extraction runs as a single process (it uses the local devices)")
  encoders = assign_encoders(raw, text_encoder, image_encoder)
  splits = _limited_splits(raw, opts.limit_per_split)
  plan = Plan(
    raw,
    encoders,
    splits,
    fingerprint(raw, encoders, splits, opts.dtype, opts.chunk_size),
    opts.chunk_size,
  )

  # An existing store: return it when it is this extraction; refuse (or replace) anything else.
  _check_out(out)
  if _already_extracted(out, plan, overwrite=overwrite):
    _log(progress, f"{out}: already extracted with these encoders; nothing to do")
    return out

  _open_partial(partial, plan, resume)
  t0 = time.monotonic()
  timing = timing if timing is not None else ExtractionTiming()
  n_done = _encode_pending(plan, partial, opts, progress=progress, devices=devices, timing=timing)
  seconds = time.monotonic() - t0
  path = _assemble(plan, partial, out, opts)
  shutil.rmtree(partial, ignore_errors=True)
  if n_done:
    _log(
      progress,
      f"extracted {n_done} examples in {seconds:.1f} s ({n_done / max(seconds, 1e-9):.1f} "
      f"samples/s); wrote {path}\n{timing.summary()}",
    )
  return path


def _limited_splits(raw: RawDataset, limit: int | None) -> dict:
  """The splits to extract (the first `limit` examples of each), their ids checked unique."""
  splits = {s: limited(ex, limit) for s, ex in raw.splits.items()}
  for s, ex in splits.items():
    # (Lazy splits are checked when the store is written: reading their ids here would decode
    # images.)
    if isinstance(ex, list) and len({str(e.id) for e in ex}) != len(ex):
      raise DatasetError(f"split {s!r}: sample ids are not unique")
  return splits


def _already_extracted(out: pathlib.Path, plan: Plan, *, overwrite: bool) -> bool:
  """Whether `out` holds the store of this exact extraction (and no `overwrite` was asked for).

  Raises:
    StoreError: `out` holds a store made differently and `overwrite` is off.
  """
  if not (out / "manifest.json").is_file():
    return False
  try:
    manifest = json.loads((out / "manifest.json").read_text())
  except json.JSONDecodeError:
    manifest = {}
  old = manifest.get("extraction", {}).get("fingerprint")
  why = "it was not made by extract_features" if old is None else difference(old, plan.fingerprint)
  if why is None and not overwrite:
    return True
  if why is not None and not overwrite:
    raise StoreError(
      f"{out} already holds a different feature store ({why}); pass overwrite=True "
      "(--overwrite) to replace it"
    )
  return False


def _check_out(out: pathlib.Path) -> None:
  """Refuses an output path that is not a store or an empty folder, or that cannot be created.

  Never replace something that is not a store: a mistyped --out could name a folder of other files.
  """
  check_store_target(out, overwrite=True)  # a store is judged by its fingerprint afterwards
  for parent in out.parents:
    if parent.exists():
      if not parent.is_dir():
        raise StoreError(f"cannot write a store at {out}: {parent} is a file; choose another --out")
      break


def _log(enabled: bool, msg: str) -> None:
  if enabled and jax.process_index() == 0:
    print(msg, file=sys.stderr, flush=True)


def _open_partial(partial: pathlib.Path, plan: Plan, resume: bool) -> None:
  """Creates the work folder, or checks that an existing one belongs to this extraction."""
  pj = partial / "progress.json"
  if partial.exists() and not resume:
    shutil.rmtree(partial)
  if pj.is_file():
    try:
      state = json.loads(pj.read_text())
    except json.JSONDecodeError:
      state = {}
    if state.get("format") != PARTIAL_FORMAT or state.get("version") != PARTIAL_VERSION:
      raise EncoderError(
        f"{partial} is not a partial extraction of this version; delete it or pass "
        "resume=False (--no-resume)"
      )
    why = difference(state["fingerprint"], plan.fingerprint)
    if why is not None:
      raise EncoderError(
        f"{partial} holds a partial extraction made differently ({why}); delete it or pass "
        "resume=False (--no-resume) to start over"
      )
    return
  partial.mkdir(parents=True, exist_ok=True)
  _write_progress(partial, plan, done={})


def _write_progress(partial: pathlib.Path, plan: Plan, done: Mapping[str, list[int]]) -> None:
  state = {
    "format": PARTIAL_FORMAT,
    "version": PARTIAL_VERSION,
    "fingerprint": plan.fingerprint,
    "chunks": {s: plan.num_chunks(s) for s in plan.splits},
    "done": {s: sorted(v) for s, v in done.items()},
    "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  atomic.write_text(partial / "progress.json", json.dumps(state, indent=1))


def _done_chunks(partial: pathlib.Path, plan: Plan) -> dict[str, list[int]]:
  return {
    s: [k for k in range(plan.num_chunks(s)) if chunk_path(partial, s, k).is_file()]
    for s in plan.splits
  }


def _encode_pending(
  plan: Plan,
  partial: pathlib.Path,
  opts: ExtractionOptions,
  *,
  progress: bool,
  devices: Sequence[Any] | None,
  timing: ExtractionTiming,
) -> int:
  """Encodes every chunk that has no file yet (its breakdown into `timing`). Returns the number of
  examples encoded."""
  done = _done_chunks(partial, plan)
  work = [(s, k) for s in plan.splits for k in range(plan.num_chunks(s)) if k not in done[s]]
  if not work:
    return 0
  devices = list(devices if devices is not None else jax.local_devices())
  mesh = Mesh(np.asarray(devices), ("data",))
  global_batch = -(-opts.batch_size // len(devices)) * len(devices)
  replicated = NamedSharding(mesh, PartitionSpec())
  params: dict[int, Any] = {}  # one replicated copy per distinct encoder (shared image encoders)
  for enc in plan.encoders.values():
    if id(enc) not in params:
      params[id(enc)] = jax.device_put(enc.params, replicated)

  def shard(a: np.ndarray):
    return jax.device_put(a, NamedSharding(mesh, PartitionSpec("data", *([None] * (a.ndim - 1)))))

  # PIL decodes and resizes with the GIL released: one thread per core keeps the devices fed.
  producer = Producer(
    plan,
    work,
    batch_size=opts.batch_size,
    global_batch=global_batch,
    text_buckets=opts.text_buckets,
    on_error=opts.on_error,
    num_workers=opts.num_workers or min(32, os.cpu_count() or 1),
    num_devices=len(devices),
  ).start()
  sink = _ChunkSink(plan, partial, done, opts.dtype, timing)
  failures: list[dict[str, str]] = []
  pending = None  # (batch, device outputs): fetched after the next batch is dispatched
  bars: dict[str, Progress] = {}

  def fetch(item: tuple[HostBatch, dict]) -> None:
    bars[item[0].split].update(sink.finish(*item))

  t_loop = time.perf_counter()
  try:
    for batch in _timed(producer, timing):
      if batch.split not in bars:
        bars[batch.split] = _split_bar(plan, work, batch.split, opts.batch_size, progress)
      if batch.failures and opts.on_error == "fail":
        if not failures and pending is not None:
          fetch(pending)  # keep what was computed before the first bad image
          pending = None
        failures += batch.failures
        producer.scan_only.set()
      if failures:
        bars[batch.split].update(batch.size)
        continue  # scanning: list every unreadable image, encode nothing more
      outs = _dispatch(plan, batch, params, shard, opts.dtype, timing)
      if pending is not None:
        fetch(pending)
      pending = (batch, outs)
    if pending is not None and not failures:
      fetch(pending)
  finally:
    producer.close()
    timing.loop_s += time.perf_counter() - t_loop
    timing.prepare_s += producer.prepare_s
    for bar in bars.values():
      bar.close()
  if failures:
    _raise_unreadable(partial, failures)
  return sink.examples


class _ChunkSink:
  """Fetches encoded batches from the devices and writes each chunk once its last batch is in.

  Attributes:
    examples: examples fetched so far.
  """

  def __init__(
    self,
    plan: Plan,
    partial: pathlib.Path,
    done: dict[str, list[int]],
    dtype,
    timing: ExtractionTiming,
  ):
    self.plan, self.partial, self.done, self.dtype, self.timing = plan, partial, done, dtype, timing
    self.acc: ChunkAccumulator | None = None
    self.examples = 0

  def finish(self, batch: HostBatch, outs) -> int:
    """Waits for one batch's device outputs and adds them to its chunk. Returns the batch's size."""
    timing = self.timing
    t = time.perf_counter()
    jax.block_until_ready(outs)
    t_fetch = time.perf_counter()
    timing.device_wait_s += t_fetch - t
    host = {}
    for name, (x, m) in outs.items():
      x, m = np.asarray(x), np.asarray(m)
      g = batch.gather.get(name)
      host[name] = (x, m) if g is None else (x[g], m[g])  # distinct images -> their examples
    if self.acc is None or (self.acc.split, self.acc.k) != (batch.split, batch.chunk):
      self.acc = ChunkAccumulator(self.plan, batch.split, batch.chunk, self.dtype)
    self.acc.add(batch, host)
    self.examples += batch.size
    if batch.last_in_chunk:
      # The chunk's file, written atomically, is what marks it done on resume (`_done_chunks`);
      # progress.json is the record for people.
      self.acc.write(self.partial)
      self.done[batch.split].append(batch.chunk)
      _write_progress(self.partial, self.plan, self.done)
      if _after_chunk_hook is not None:
        _after_chunk_hook(batch.split, batch.chunk)
      self.acc = None
    timing.write_s += time.perf_counter() - t_fetch
    timing.batches += 1
    timing.examples += batch.size
    return batch.size


def _raise_unreadable(partial: pathlib.Path, failures: list[dict[str, str]]) -> None:
  """Lists every unreadable image in `partial/unreadable.json` and raises EncoderError naming a few."""
  listing = partial / "unreadable.json"
  listing.write_text(json.dumps(failures, indent=1))
  first = "; ".join(
    f"{f['split']}/{f['id']} ({f['modality']}): {f['reason']}" for f in failures[:3]
  )
  raise EncoderError(
    f"{len(failures)} unreadable image(s): {first}{' ...' if len(failures) > 3 else ''}; "
    f"full list in {listing}; fix or remove them, or pass on_error='skip' (--on-error skip)"
  )


def _split_bar(plan: Plan, work, split: str, batch_size: int, progress: bool) -> Progress:
  """The progress bar of one split: the examples of its pending chunks."""
  remaining = sum(
    min(plan.chunk_size, len(plan.splits[split]) - k * plan.chunk_size)
    for s, k in work
    if s == split
  )
  return Progress(
    remaining, f"features {split}", log_every=max(1, 20 * batch_size), enabled=progress
  )


def _dispatch(plan: Plan, batch: HostBatch, params, shard, dtype, timing: ExtractionTiming) -> dict:
  """Puts one host batch on the devices and starts every modality's encoder (async dispatch).

  Returns:
    {modality: (features [B, T, D], mask [B, T])} as device arrays still being computed.
  """
  outs = {}
  for m in plan.raw.modalities if batch.ids else ():
    enc = plan.encoders[m.name]
    if m.kind == "text":
      timing.count_text(batch.inputs[m.name]["attention_mask"], enc.max_len)
    inputs = {k: shard(v) for k, v in batch.inputs[m.name].items()}
    outs[m.name] = enc.encode(inputs, params[id(enc)], out_dtype=dtype)
  return outs


def _timed(batches, timing: ExtractionTiming):
  """Yields from `batches`, adding the time spent waiting for each to `timing.host_wait_s`."""
  it = iter(batches)
  while True:
    t = time.perf_counter()
    try:
      batch = next(it)
    except StopIteration:
      return
    finally:
      timing.host_wait_s += time.perf_counter() - t
    yield batch


def _assemble(
  plan: Plan, partial: pathlib.Path, out: pathlib.Path, opts: ExtractionOptions
) -> pathlib.Path:
  """Copies the chunk files into a new store (StoreWriter: atomic, train means of valid tokens)."""
  specs = [
    ModalitySpec(
      name=m.name,
      dim=plan.encoders[m.name].hidden_size,
      max_len=plan.encoders[m.name].seq_len,
      kind="tokens" if m.kind == "text" else "patches",
      encoder=plan.encoders[m.name].name,
    )
    for m in plan.raw.modalities
  ]
  writer = StoreWriter(out, modalities=specs, task=plan.raw.task, dtype=opts.dtype, overwrite=True)
  truncated = {m.name: {} for m in plan.raw.modalities if m.kind == "text"}
  skipped: list[dict[str, str]] = []
  try:
    for split in plan.splits:
      paths = [chunk_path(partial, split, k) for k in range(plan.num_chunks(split))]
      metas = [read_chunk_meta(p) for p in paths]
      n = sum(m["rows"] for m in metas)
      mm = writer.allocate_split(split, n)
      ids: list[str] = []
      for p, meta in zip(paths, metas):
        with np.load(p, allow_pickle=False) as z:
          r, row = meta["rows"], len(ids)
          for spec in specs:
            x, mask = z[f"x_{spec.name}"], z[f"mask_{spec.name}"]
            t = x.shape[1]
            # Stored at the fixed max_len: zeros and mask False after the chunk's longest text.
            mm[spec.name][row : row + r, :t] = x
            mm[spec.name][row : row + r, t:] = 0
            mm[f"{spec.name}_mask"][row : row + r, :t] = mask
            mm[f"{spec.name}_mask"][row : row + r, t:] = False
          mm["labels"][row : row + r] = z["labels"]
          ids += [str(i) for i in z["ids"]]
        for name, c in meta["truncated"].items():
          truncated[name][split] = truncated[name].get(split, 0) + c
        skipped += meta["skipped"]
      for a in mm.values():
        a.flush()
      del mm
      writer.set_ids(split, ids)
    extraction = {
      "fingerprint": plan.fingerprint,
      "dataset": plan.raw.name,
      "raw_info": plan.raw.info,
      "encoders": {m.name: plan.encoders[m.name].info() for m in plan.raw.modalities},
      "text_buckets": None if opts.text_buckets is None else list(opts.text_buckets),
      "batch_size": opts.batch_size,
      "limit_per_split": opts.limit_per_split,
      "on_error": opts.on_error,
      "truncated": truncated,
      "num_skipped": len(skipped),
      "skipped": skipped,
      "raw_skipped": list(plan.raw.skipped),
      "jax_backend": jax.default_backend(),
      "device_kind": jax.local_devices()[0].device_kind,
      "num_devices": jax.local_device_count(),
    }
    return writer.finalize(extra_manifest={"extraction": extraction})
  except BaseException:
    writer.abort()
    raise


# --------------------------------------------------------------------------------------------------
# Entry points for the command line and configs.
# --------------------------------------------------------------------------------------------------


def run_extraction(
  cfg: FeaturesConfig, out: str | os.PathLike, *, reader_options: Mapping[str, Any] | None = None
) -> pathlib.Path:
  """Reads a raw dataset, loads its encoders by name and extracts (what `flmoe features` runs).

  Args:
    cfg: the options (`FeaturesConfig`: dataset, raw folder, encoders, dtypes, ...). A missing
      `image_encoder` folder named `tiny-vit` is created with `easyvqa_demo_encoders` (a random ViT).
    out: the store folder.
    reader_options: extra reader keyword arguments (e.g. {"split_mode": "official"}).

  Returns:
    The store path.

  Raises:
    EncoderError / StoreError / DatasetError: a bad option, an `out` that is not a store, a raw
      folder that cannot be read or (on_error="fail") an image file that cannot be opened; all raised
      before an encoder is loaded or anything is written.
  """
  from flmoe_jax.data.raw import RawDataset, load_raw, verify_images
  from flmoe_jax.features.encoders import easyvqa_demo_encoders, load_encoder

  # The options were checked by the config; the data next: nothing is loaded or written before.
  if not cfg.dataset:
    raise EncoderError("--dataset must be given (a reader name, e.g. mmimdb)")
  _check_out(pathlib.Path(out))
  opts = ExtractionOptions.of(cfg)
  reading = dict(reader_options or {})
  reading.setdefault("on_error", opts.on_error)
  raw = load_raw(cfg.dataset, cfg.raw or None, **reading)
  if opts.on_error == "fail" and not raw.info.get("images_verified"):
    # A file that is not an image at all fails here, before the encoders load and before
    # `<out>.partial/` exists; a damaged one (e.g. truncated) can still fail during encoding.
    todo = RawDataset(
      raw.name,
      raw.modalities,
      raw.task,
      {
        s: list(limited(ex, opts.limit_per_split))
        for s, ex in raw.splits.items()
        if isinstance(ex, list)
      },
    )
    verify_images(todo, "fail", num_workers=min(8, os.cpu_count() or 1))
  kinds = {m.kind for m in raw.modalities}
  text = image = None
  load = dict(
    allow_download=cfg.allow_download, dtype=cfg.compute_dtype, attention=cfg.encoder_attention
  )
  if "text" in kinds:
    text = load_encoder("text", cfg.text_encoder, max_len=cfg.text_max_len, **load)
  if "image" in kinds:
    name = cfg.image_encoder
    if name and pathlib.Path(name).name == "tiny-vit" and not pathlib.Path(name).exists():
      easyvqa_demo_encoders(pathlib.Path(name).parent)
    image = load_encoder("image", name, **load)
  return extract_features(
    raw,
    out,
    text_encoder=text,
    image_encoder=image,
    options=opts,
    resume=cfg.resume,
    overwrite=cfg.overwrite,
    progress=cfg.progress,
  )


def features_from_config(cfg, **changes) -> pathlib.Path:
  """Extracts the store of a run config: `cfg.store` from its `features` block (configs/easyvqa.py).

  Args:
    cfg: a ConfigDict with `store` and `features` (the keys of `FeaturesConfig`).
    **changes: `FeaturesConfig` options that win over the block (overwrite, allow_download, ...).

  Raises:
    EncoderError: no `features` block, or a key `FeaturesConfig` does not know (a misspelt key is
      never ignored).
  """
  if "features" not in cfg:
    raise EncoderError(
      f"config {cfg.get('name', '')!r} has no `features` block; use --dataset/--raw/--out"
    )
  block = dict(cfg.features)
  known = {f.name for f in dataclasses.fields(FeaturesConfig)}
  unknown = sorted(set(block) - known)
  if unknown:
    raise EncoderError(
      f"config.features has unknown key(s) {unknown}; valid: {', '.join(sorted(known))}"
    )
  if block.get("text_buckets") is not None:
    block["text_buckets"] = tuple(block["text_buckets"])
  block = {k: v for k, v in block.items() if v is not None and v != ""}
  return run_extraction(FeaturesConfig(**{**block, **changes}), cfg.store)


def cli_features(args, overrides=()) -> int:
  """`flmoe features`: from a run config's `features` block, or from the flags alone."""
  given = {
    f.name: getattr(args, f.name)
    for f in dataclasses.fields(FeaturesConfig)
    if getattr(args, f.name, None) is not None
  }
  if args.bf16:
    given["compute_dtype"] = "bfloat16"
  if args.config:
    from flmoe_jax.config import load_config

    cfg = load_config(args.config, overrides)
    if args.out:
      with cfg.unlocked():
        cfg.store = args.out
    path = features_from_config(cfg, **given)
  else:
    if overrides:
      raise EncoderError("--config.* overrides need --config")
    if not given.get("dataset") or not args.out:
      raise EncoderError("pass --config FILE, or --dataset NAME and --out DIR (and --raw DIR)")
    path = run_extraction(FeaturesConfig(**given), args.out)
  print(f"feature store: {path}")
  return 0


def add_cli(subparsers):
  """Adds the `features` subcommand with its handler (`cli_features`)."""
  p = config_lib.add_cli(subparsers)
  p.set_defaults(fn=cli_features)
  return p
