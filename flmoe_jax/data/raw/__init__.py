"""Raw dataset readers: hand-downloaded folders (or a prepared TFDS source) -> `RawDataset`.

Readers (see docs/datasets.md for the layouts):

* `mmimdb`: plot text + poster, 23 genres, multilabel;
* `enrico`: screenshot + wireframe, 20 design topics, multiclass;
* `mmhs150k`: tweet text + image, binary hate speech;
* `easyvqa`: question + image, 13 answers (data from the `easy-vqa` wheel; no folder needed);
* `tfds:mmimdb`, `tfds:enrico`, `tfds:mmhs150k`: the same datasets read back from a prepared TFDS
  `data_dir` (`flmoe_jax.data.tfds`); tensorflow-datasets is imported only when one of these is
  used.

`load_raw(name, raw_dir, **options)` dispatches by name.
"""

from __future__ import annotations

import functools
import inspect
import os

from flmoe_jax.data.raw import easyvqa, enrico, mmhs150k, mmimdb
from flmoe_jax.data.raw.base import (
  READERS,
  RawDataset,
  RawExample,
  RawModality,
  register,
  verify_images,
)
from flmoe_jax.data.raw.easyvqa import load_easyvqa
from flmoe_jax.data.raw.enrico import load_enrico
from flmoe_jax.data.raw.mmhs150k import load_mmhs150k
from flmoe_jax.data.raw.mmimdb import load_mmimdb
from flmoe_jax.errors import DatasetError

TFDS_DATASETS = ("mmimdb", "enrico", "mmhs150k")


def _load_from_tfds(name: str, data_dir, **options) -> RawDataset:
  from flmoe_jax.data.tfds import load_raw_from_tfds  # noqa: PLC0415  (imports tensorflow-datasets)

  return load_raw_from_tfds(name, data_dir, **options)


for _name in TFDS_DATASETS:
  register(f"tfds:{_name}")(functools.partial(_load_from_tfds, _name))


def available() -> list[str]:
  """The registered reader names, sorted."""
  return sorted(READERS)


def load_raw(name: str, raw_dir: str | os.PathLike | None, **options) -> RawDataset:
  """Reads a dataset with the reader registered as `name`.

  Args:
    name: a reader name (`available()`), e.g. `mmimdb` or `tfds:mmimdb`.
    raw_dir: the hand-downloaded folder (a TFDS `data_dir` for `tfds:*`; may be None for `easyvqa`).
    **options: reader options (`on_error`, `split_mode`, `append_ocr`, ...).

  Returns:
    The `RawDataset`.
  """
  reader = READERS.get(name)
  if reader is None:
    raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(available())}")
  try:
    inspect.signature(reader).bind(raw_dir, **options)
  except TypeError as e:
    raise DatasetError(f"dataset {name!r}: bad reader options {sorted(options)}: {e}") from None
  return reader(raw_dir, **options)


__all__ = [
  "READERS",
  "TFDS_DATASETS",
  "DatasetError",
  "RawDataset",
  "RawExample",
  "RawModality",
  "available",
  "easyvqa",
  "enrico",
  "load_easyvqa",
  "load_enrico",
  "load_mmhs150k",
  "load_mmimdb",
  "load_raw",
  "mmhs150k",
  "mmimdb",
  "register",
  "verify_images",
]
