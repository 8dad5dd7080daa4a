"""The contract between raw dataset readers and the feature extractor.

A reader turns a hand-downloaded dataset folder (or a TFDS source) into a `RawDataset`: per split,
a list of `RawExample`s whose inputs are text strings or images, plus the modality layout and the
task. The extractor (`flmoe_jax.features.extract`) encodes each modality with a frozen encoder and
writes a feature store.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import numpy as np

from flmoe_jax.data.store import TaskSpec
from flmoe_jax.errors import DatasetError

# A text input is a str; an image input is a file path, a PIL image, or a uint8 [H, W, 3] array.
RawInput = Union[str, pathlib.Path, "PIL.Image.Image", np.ndarray]  # noqa: F821


@dataclasses.dataclass(frozen=True)
class RawModality:
  """One modality of a raw dataset.

  Attributes:
    name: store modality name (`text`, `image`, `screenshot`, `wireframe`, ...).
    kind: `text` (tokenised -> `tokens` in the store) or `image` (-> `patches`).
  """

  name: str
  kind: Literal["text", "image"]


@dataclasses.dataclass(frozen=True)
class RawExample:
  """One example.

  Attributes:
    id: a sample id, unique within the dataset.
    inputs: {modality name: text (str) | image (path, PIL image or uint8 [H, W, 3])}.
    label: int class (multiclass/binary) or uint8 [C] multi-hot (multilabel).
    meta: optional per-example extras that are not model inputs (MMHS150K: the 3 annotator votes and
      the OCR text); readers may leave it empty.
  """

  id: str
  inputs: dict[str, Any]
  label: Any
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RawDataset:
  """A dataset read from its raw layout.

  Attributes:
    name: dataset name.
    modalities: modality layout, in model input order.
    task: the task (type, classes).
    splits: {split name: examples in a fixed order}.
    skipped: [{"id", "reason"}] examples left out (corrupt files with `on_error="skip"`, known-bad
      ids).
    info: provenance to store in the manifest (raw folder layout version, options used).
  """

  name: str
  modalities: Sequence[RawModality]
  task: TaskSpec
  splits: dict[str, list[RawExample]]
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


# name -> reader(raw_dir, **options) -> RawDataset; filled by the reader modules.
READERS: dict[str, Callable[..., RawDataset]] = {}


def register(name: str):
  """Decorator adding a reader to `READERS`."""

  def deco(fn):
    READERS[name] = fn
    return fn

  return deco


# --------------------------------------------------------------------------------------------------
# Helpers shared by the readers.
# --------------------------------------------------------------------------------------------------

ON_ERROR_MODES = ("fail", "skip")
MAX_LISTED = 10  # offending ids named in one error message


def check_on_error(on_error: str) -> str:
  """Validates an `on_error` option (`fail` or `skip`)."""
  if on_error not in ON_ERROR_MODES:
    raise DatasetError(f"on_error={on_error!r} is not one of {ON_ERROR_MODES}")
  return on_error


def one_line(text: Any) -> str:
  """Collapses whitespace so that a reason or id fits in a one-line message."""
  return " ".join(str(text).split())


@dataclasses.dataclass
class Problems:
  """Per-example problems collected while reading; `resolve` raises or records them.

  Attributes:
    dataset: dataset name, for messages.
    source: the folder (or source) being read, for messages.
    items: [(id, reason)] in the order found.
  """

  dataset: str
  source: str
  items: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def add(self, example_id: str, reason: str) -> None:
    """Records one problem."""
    self.items.append((str(example_id), one_line(reason)))

  def message(self) -> str:
    """One line naming up to `MAX_LISTED` offending ids and the total count."""
    n = len(self.items)
    listed = "; ".join(f"{i}: {r}" for i, r in self.items[:MAX_LISTED])
    more = f"; ... and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
    return (
      f"{self.dataset}: {n} bad example(s) in {self.source}: {listed}{more} "
      "(fix the files, or pass on_error='skip' (--on-error skip) to leave them out)"
    )

  def resolve(self, on_error: str, skipped: list[dict[str, str]]) -> None:
    """Raises `DatasetError` (`on_error="fail"`) or appends the problems to `skipped`."""
    if not self.items:
      return
    if on_error == "fail":
      raise DatasetError(self.message())
    skipped.extend({"id": i, "reason": r} for i, r in self.items)


def first_repeated_id(split_ids: Mapping[str, Sequence[str]]) -> tuple[str, str, str] | None:
  """Finds the first id that a set of split lists names twice.

  Args:
    split_ids: {split: ids}, scanned in order.

  Returns:
    (id, split of its first listing, split of the repeat) for the first repeat found, or None.
  """
  seen: dict[str, str] = {}
  for split, ids in split_ids.items():
    for example_id in ids:
      if example_id in seen:
        return example_id, seen[example_id], split
      seen[example_id] = split
  return None


def read_examples(
  split_ids: Mapping[str, Sequence[str]],
  read_one: Callable[[str], RawExample | str],
  problems: Problems,
) -> dict[str, list[RawExample]]:
  """Reads the listed examples of every split, collecting the bad ones in `problems`.

  Args:
    split_ids: {split: ids in order}.
    read_one: id -> the example, or a short reason why it cannot be read.
    problems: receives each reason as `[split] reason` under the example's id.

  Returns:
    {split: the examples read, in listed order}; the bad ones are left out.
  """
  splits: dict[str, list[RawExample]] = {}
  for split, ids in split_ids.items():
    examples = []
    for example_id in ids:
      got = read_one(example_id)
      if isinstance(got, str):
        problems.add(example_id, f"[{split}] {got}")
      else:
        examples.append(got)
    splits[split] = examples
  return splits


def require_dir(raw_dir: str | os.PathLike | None, dataset: str) -> pathlib.Path:
  """Returns `raw_dir` as a path, or raises `DatasetError` if it is not a folder."""
  if raw_dir is None:
    raise DatasetError(
      f"{dataset}: no raw folder given (pass the folder of the hand-downloaded dataset)"
    )
  path = pathlib.Path(raw_dir).expanduser()
  if not path.is_dir():
    raise DatasetError(f"{dataset}: raw folder {path} does not exist or is not a folder")
  return path


def require_file(path: pathlib.Path, dataset: str, what: str = "") -> pathlib.Path:
  """Returns `path`, or raises `DatasetError` naming it if it is not a file."""
  if not path.is_file():
    extra = f" ({what})" if what else ""
    raise DatasetError(f"{dataset}: required file {path} is missing{extra}")
  return path


def read_text(path: pathlib.Path, dataset: str, what: str = "") -> str:
  """Reads a UTF-8 text file (newlines kept as they are).

  Args:
    path: the file.
    dataset: dataset name, for messages.
    what: what the file should hold, for the message of a missing file.

  Raises:
    DatasetError: naming the file, when it is missing or not UTF-8.
  """
  require_file(path, dataset, what)
  try:
    with open(path, encoding="utf-8", newline="") as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise DatasetError(
      f"{dataset}: {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
    ) from None


def read_json(path: pathlib.Path, dataset: str) -> Any:
  """Reads a JSON file, raising `DatasetError` naming it when it is missing or malformed."""
  require_file(path, dataset)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DatasetError(f"{dataset}: {path} is not valid JSON: {one_line(e)}") from None


def check_image_file(path: str | os.PathLike, *, full: bool = False) -> str | None:
  """Checks that an image file exists and can be opened.

  Args:
    path: the image file.
    full: also decode the pixels (JPEG at reduced size via PIL's draft mode, so it stays cheap);
      catches truncated files that a header check misses.

  Returns:
    None if the image is fine, else a short reason.
  """
  from PIL import Image  # noqa: PLC0415  (PIL is only needed when images are checked)

  path = pathlib.Path(path)
  if not path.is_file():
    return f"image file {path} is missing"
  try:
    with Image.open(path) as im:
      im.verify()
    if full:
      with Image.open(path) as im:
        im.draft("RGB", (64, 64))
        im.load()
  except Exception as e:  # noqa: BLE001  (PIL raises many types for corrupt files)
    return f"image file {path} cannot be read ({type(e).__name__}: {one_line(e)})"
  return None


def verify_images(
  ds: RawDataset, on_error: str = "fail", *, full: bool = False, num_workers: int = 1
) -> RawDataset:
  """Opens every image given as a file path and drops or reports the unreadable ones.

  Readers only check that image files exist; the extractor calls this before encoding (or a reader
  runs it when given `verify_images=True`). Images given as arrays or PIL images, and splits that
  are not plain lists (the lazy TFDS adapter, whose images tfds already decoded), are not checked.

  Args:
    ds: the dataset; its splits and `skipped` are updated in place.
    on_error: `fail` raises `DatasetError` listing up to 10 bad ids and the count; `skip` drops the
      examples and records them in `ds.skipped`.
    full: decode the pixels too (slower; see `check_image_file`).
    num_workers: files checked in parallel (threads; the check is mostly file I/O).

  Returns:
    `ds`.
  """
  check_on_error(on_error)
  image_mods = [m.name for m in ds.modalities if m.kind == "image"]
  problems = Problems(ds.name, "images")
  kept: dict[str, list[RawExample]] = {}
  with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
    reasons_of = {}  # (split, example index, modality) -> reason or None
    for split, examples in ds.splits.items():
      if not isinstance(examples, list):
        continue
      for i, ex in enumerate(examples):
        for m in image_mods:
          value = ex.inputs.get(m)
          if isinstance(value, (str, os.PathLike)):
            reasons_of[split, i, m] = pool.submit(check_image_file, value, full=full)
    reasons_of = {k: f.result() for k, f in reasons_of.items()}
  for split, examples in ds.splits.items():
    if not isinstance(examples, list):
      continue
    keep = []
    for i, ex in enumerate(examples):
      reasons = [
        f"{m}: {reasons_of[split, i, m]}" for m in image_mods if reasons_of.get((split, i, m))
      ]
      if reasons:
        problems.add(ex.id, f"[{split}] " + "; ".join(reasons))
      else:
        keep.append(ex)
    if len(keep) != len(examples):
      kept[split] = keep
  problems.resolve(on_error, ds.skipped)  # raises before anything changes when on_error="fail"
  ds.splits.update(kept)
  ds.info["images_verified"] = "full" if full else "header"
  return ds
