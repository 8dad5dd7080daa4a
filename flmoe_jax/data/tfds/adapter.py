"""Prepare the TFDS builders from raw folders, and read a prepared TFDS dataset back as a
`RawDataset`.

`load_raw_from_tfds` gives the feature extractor the same `RawDataset` as the raw readers, with two
differences: images are uint8 [H, W, 3] arrays decoded by tfds (not file paths), and each split is a
`LazyExamples` sequence that reads and decodes records on access (so MMHS150K's 150k images are
never held in memory at once). Reader options that only change the text (`append_ocr`, `strip_urls`
for MMHS150K) are applied on read; MM-IMDb's `split_mode` selects the builder config.
"""

from __future__ import annotations

import collections.abc
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from flmoe_jax.data.raw import base, enrico, mmhs150k, mmimdb
from flmoe_jax.data.store import TaskSpec
from flmoe_jax.data.tfds.builders import BUILDERS
from flmoe_jax.errors import DatasetError

FILE_FORMAT = "array_record"
SPLIT_ORDER = ("train", "val", "test")


class LazyExamples(collections.abc.Sequence):
  """A read-only sequence of `RawExample`s decoded on access from a tfds data source.

  Attributes:
    images_verified: True: tfds decodes every image on read, so `base.verify_images` skips this
      split.
  """

  images_verified = True

  def __init__(self, source, convert: Callable[[dict[str, Any]], base.RawExample]):
    self._source = source
    self._convert = convert

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    n = len(self)
    if index < 0:
      index += n
    if not 0 <= index < n:
      raise IndexError(f"example index {index} out of range for {n} examples")
    return self._convert(self._source[index])

  def __iter__(self):
    for i in range(len(self)):
      yield self[i]


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _converter(name: str, *, append_ocr: bool, strip_urls: bool):
  def convert(record: dict[str, Any]) -> base.RawExample:
    eid = _text(record["id"])
    if name == "mmimdb":
      inputs = {"text": _text(record["text"]), "image": np.asarray(record["image"])}
      return base.RawExample(eid, inputs, np.asarray(record["label"], np.uint8))
    if name == "enrico":
      inputs = {
        "screenshot": np.asarray(record["screenshot"]),
        "wireframe": np.asarray(record["wireframe"]),
      }
      return base.RawExample(eid, inputs, int(record["label"]))
    img_text = _text(record["img_text"]) or None
    text = mmhs150k.tweet_text(
      _text(record["text"]), img_text, append_ocr=append_ocr, strip_urls=strip_urls
    )
    votes = [int(v) for v in np.asarray(record["votes"])]
    return base.RawExample(
      eid,
      {"text": text, "image": np.asarray(record["image"])},
      int(record["label"]),
      meta={"votes": votes, "img_text": img_text},
    )

  return convert


def _builder(name: str, data_dir, config: str | None, **kwargs):
  if name not in BUILDERS:
    raise DatasetError(f"no TFDS builder for {name!r}; available: {', '.join(sorted(BUILDERS))}")
  cls = BUILDERS[name]
  if config is not None and name != "mmimdb":
    raise DatasetError(f"{name}: the TFDS builder has no configs (got config={config!r})")
  if name == "mmimdb":
    config = config or cls.DEFAULT_CONFIG_NAME
    if config not in mmimdb.SPLIT_MODES:
      raise DatasetError(f"mmimdb: TFDS config {config!r} is not one of {mmimdb.SPLIT_MODES}")
    kwargs["config"] = config
  return cls(data_dir=os.fspath(data_dir), **kwargs)


def prepare_tfds(
  name: str,
  raw_dir: str | os.PathLike,
  data_dir: str | os.PathLike,
  *,
  config: str | None = None,
  on_error: str = "fail",
) -> tfds.core.DatasetBuilder:
  """Builds the TFDS dataset `name` from its hand-downloaded folder (array_record, no TensorFlow).

  Args:
    name: `mmimdb`, `enrico` or `mmhs150k`.
    raw_dir: the raw folder (the builder's `manual_dir`), laid out as the raw reader expects.
    data_dir: the TFDS data folder to write into.
    config: for `mmimdb`, `official` (default) or `reference`.
    on_error: `fail` or `skip` (skipped examples are listed in the dataset's `metadata.json`).

  Returns:
    The prepared builder.
  """
  base.require_dir(raw_dir, name)
  builder = _builder(name, data_dir, config, file_format=FILE_FORMAT, on_error=on_error)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(raw_dir))
  )
  return builder


def load_raw_from_tfds(
  name: str,
  data_dir: str | os.PathLike | None,
  *,
  on_error: str = "fail",
  split_mode: str | None = None,
  config: str | None = None,
  append_ocr: bool = False,
  strip_urls: bool = False,
) -> base.RawDataset:
  """Reads a prepared TFDS dataset back as a `RawDataset` (also registered as reader `tfds:<name>`).

  Args:
    name: `mmimdb`, `enrico` or `mmhs150k`.
    data_dir: the TFDS data folder `prepare_tfds` wrote into.
    on_error: accepted for symmetry with the raw readers (`fail`/`skip`); prepared data has no bad
      examples left, those were handled when it was prepared.
    split_mode: for `mmimdb`, same as the raw reader (`official`/`reference`): picks the config.
    config: the builder config (alternative spelling of `split_mode`).
    append_ocr: MMHS150K: append the OCR text to the tweet text.
    strip_urls: MMHS150K: remove links from the tweet text.

  Returns:
    The dataset; splits are `LazyExamples`, images uint8 [H, W, 3] arrays.
  """
  base.check_on_error(on_error)
  if data_dir is None:
    raise DatasetError(f"tfds:{name}: no TFDS data_dir given")
  if name != "mmimdb" and split_mode is not None:
    raise DatasetError(f"tfds:{name}: split_mode only applies to mmimdb")
  if name != "mmhs150k" and (append_ocr or strip_urls):
    raise DatasetError(f"tfds:{name}: append_ocr/strip_urls only apply to mmhs150k")
  if split_mode is not None and config is not None and split_mode != config:
    raise DatasetError(f"tfds:{name}: split_mode={split_mode!r} and config={config!r} disagree")
  builder = _builder(name, data_dir, config or split_mode)
  if not builder.is_prepared():
    raise DatasetError(
      f"tfds:{name}: no prepared dataset at {builder.data_dir} "
      f"(build it first: prepare_tfds({name!r}, RAW_DIR, {os.fspath(data_dir)!r}))"
    )
  info = builder.info
  metadata = dict(info.metadata or {})
  if name == "enrico":
    names = tuple(info.features["label"].names)
    task = TaskSpec(type="multiclass", num_classes=len(names), class_names=names)
    modalities = enrico.MODALITIES
  elif name == "mmimdb":
    task, modalities = mmimdb.TASK, mmimdb.MODALITIES
  else:
    task, modalities = mmhs150k.TASK, mmhs150k.MODALITIES
  convert = _converter(name, append_ocr=append_ocr, strip_urls=strip_urls)
  split_names = sorted(info.splits.keys(), key=lambda s: (SPLIT_ORDER + (s,)).index(s))
  splits = {s: LazyExamples(builder.as_data_source(split=s), convert) for s in split_names}
  return base.RawDataset(
    name=name,
    modalities=modalities,
    task=task,
    splits=splits,
    skipped=list(metadata.get("skipped", [])),
    info={
      "reader": f"tfds:{name}",
      "tfds_data_dir": str(builder.data_dir),
      "tfds_version": str(builder.version),
      "tfds_config": builder.builder_config.name if builder.builder_config else None,
      "append_ocr": append_ocr if name == "mmhs150k" else None,
      "strip_urls": strip_urls if name == "mmhs150k" else None,
      "prepared_from": metadata.get("reader_info", {}),
    },
  )
