"""TFDS builders for MM-IMDb, ENRICO and MMHS150K over the raw readers (manual download, no TF).

Each builder reads its hand-downloaded folder from `dl_manager.manual_dir` with the matching raw
reader (`flmoe_jax.data.raw`), so split membership, labels and id rules are exactly the readers'.
Images are stored as encoded bytes (the file's own JPEG/PNG bytes when it is already RGB, else
re-encoded as RGB PNG): tfds encodes numpy images with TensorFlow, but takes encoded bytes as they
are. With `file_format="array_record"` the whole path (prepare, `as_data_source`,
`tfds.data_source`) runs without TensorFlow; reading back decodes images with PIL into uint8
[H, W, 3] arrays.

Builder names: `mmimdb` (configs `official`, the default, and `reference`: the reader's two
`split_mode`s), `enrico`, `mmhs150k`. Examples are written in the reader's order
(`disable_shuffling=True`). Examples a reader skipped (`on_error="skip"`) are listed in the
dataset's `metadata.json` (`skipped`).
"""

from __future__ import annotations

import inspect
import io
import os
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from flmoe_jax.data.raw import base, enrico, mmhs150k, mmimdb
from flmoe_jax.errors import DatasetError

VERSION = "1.0.0"
_RELEASE_NOTES = {"1.0.0": "First version, built from the flmoe_jax raw readers."}


def image_bytes(path: str | os.PathLike) -> bytes:
  """Encoded bytes for `tfds.features.Image(shape=(None, None, 3))`.

  Args:
    path: a JPEG or PNG file.

  Returns:
    The file's own bytes when it is an RGB JPEG or PNG; otherwise (palette, RGBA, grayscale, CMYK,
    other formats) the image converted to RGB and re-encoded as PNG, since tfds decodes the bytes as
    they are and would return the wrong number of channels.
  """
  from PIL import Image  # noqa: PLC0415

  with open(path, "rb") as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as im:
      if im.mode == "RGB" and im.format in ("JPEG", "PNG"):
        return data
      out = io.BytesIO()
      im.convert("RGB").save(out, format="PNG")
      return out.getvalue()
  except Exception as e:  # noqa: BLE001  (PIL raises many types for corrupt files)
    raise DatasetError(f"image file {path} cannot be read ({type(e).__name__}: {e})") from None


def _image() -> tfds.features.Image:
  return tfds.features.Image(shape=(None, None, 3), dtype=np.uint8)


class _RawReaderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder that prepares one raw reader's output; subclasses set `READER` and the features."""

  READER: ClassVar[str] = ""
  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES: ClassVar[dict[str, str]] = _RELEASE_NOTES
  DESCRIPTION: ClassVar[str] = ""
  CITATION: ClassVar[str] = ""

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This module's file.

    tfds's own lookup, for builders that live in a package, checks `importlib_resources.abc`, and
    tensorflow-datasets 4.9.10 only declares `importlib_resources` for Python < 3.9, so it fails
    with `ModuleNotFoundError` on 3.11; the file path is what that lookup returns for a plain
    package anyway.
    """
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, on_error: str = "fail", **kwargs):
    """Creates the builder.

    Args:
      on_error: passed to the reader and to the image check: `fail` raises `DatasetError` on bad
        examples, `skip` leaves them out (listed in `metadata.json`).
      **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (`data_dir`, `config`, `file_format`).
    """
    self._on_error = base.check_on_error(on_error)
    super().__init__(**kwargs)

  def _features(self) -> dict[str, Any]:
    raise NotImplementedError

  def _reader_options(self) -> dict[str, Any]:
    return {}

  def _encode(self, ex: base.RawExample, ds: base.RawDataset) -> dict[str, Any]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=tfds.features.FeaturesDict(self._features()),
      disable_shuffling=True,
      citation=self.CITATION,
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    ds = base.READERS[self.READER](
      dl_manager.manual_dir, on_error=self._on_error, **self._reader_options()
    )
    base.verify_images(ds, self._on_error)
    self.info.metadata["skipped"] = list(ds.skipped)
    self.info.metadata["reader_info"] = dict(ds.info)
    self.info.metadata["class_names"] = list(ds.task.class_names)
    return {
      split: self._generate_examples(examples, ds)
      for split, examples in ds.splits.items()
      if examples  # tfds cannot write an empty split
    }

  def _generate_examples(self, examples, ds):
    for ex in examples:
      yield ex.id, self._encode(ex, ds)


class Mmimdb(_RawReaderBuilder):
  """MM-IMDb: movie plot (`plot[0]`) + poster, 23-genre multi-hot label."""

  name = "mmimdb"
  READER = "mmimdb"
  BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
    tfds.core.BuilderConfig(name="official", description="Official split.json membership."),
    tfds.core.BuilderConfig(
      name="reference",
      description="The reference code's filename-sorted contiguous slices (not official).",
    ),
  ]
  DEFAULT_CONFIG_NAME = "official"
  DESCRIPTION = (
    "MM-IMDb (Arevalo et al. 2017): first plot summary + poster, 23 genres (multilabel)."
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the MM-IMDb archive `mmimdb.tar.gz` from the dataset's page (the GMU-MMIMDb project of
  Arevalo et al.) and extract it. Point `manual_dir` at the extracted folder holding `split.json`
  and `dataset/` (`dataset/<imdb id>.json` + `dataset/<imdb id>.jpeg`), or at its parent holding
  `mmimdb/`.
  """

  def _features(self):
    return {
      "id": tfds.features.Text(),
      "text": tfds.features.Text(),
      "image": _image(),
      "label": tfds.features.Tensor(shape=(len(mmimdb.GENRES),), dtype=np.uint8),
    }

  def _reader_options(self):
    return {"split_mode": self.builder_config.name}

  def _encode(self, ex, ds):
    return {
      "id": ex.id,
      "text": ex.inputs["text"],
      "image": image_bytes(ex.inputs["image"]),
      "label": np.asarray(ex.label, np.uint8),
    }


class Enrico(_RawReaderBuilder):
  """ENRICO: UI screenshot + wireframe, 20 design topics."""

  name = "enrico"
  READER = "enrico"
  DESCRIPTION = "ENRICO (Leiva et al. 2020): RICO screenshot + wireframe, 20 design topics."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Get `design_topics.csv` from the luileito/enrico GitHub repository and the `screenshots` and
  `wireframes` zips from the ENRICO resources page (the ones MultiBench's `download_data.sh`
  fetches); extract them so that `manual_dir` holds `design_topics.csv`, `screenshots/<id>.jpg` and
  `wireframes/<id>.png`.
  """

  def _features(self):
    return {
      "id": tfds.features.Text(),
      "screenshot": _image(),
      "wireframe": _image(),
      "label": tfds.features.ClassLabel(names=list(enrico.TOPICS)),
    }

  def _encode(self, ex, ds):
    topic = ds.task.class_names[ex.label]
    if topic not in enrico.TOPICS:
      raise DatasetError(
        f"enrico: screen {ex.id} has topic {topic!r}, not one of the 20 ENRICO topics"
      )
    return {
      "id": ex.id,
      "screenshot": image_bytes(ex.inputs["screenshot"]),
      "wireframe": image_bytes(ex.inputs["wireframe"]),
      "label": topic,
    }


class Mmhs150k(_RawReaderBuilder):
  """MMHS150K: tweet text + image, binary hate label, the 3 annotator votes and the OCR text."""

  name = "mmhs150k"
  READER = "mmhs150k"
  DESCRIPTION = (
    "MMHS150K (Gomez et al. 2020): tweet text + image; label = hate if >= 2 of 3 votes are > 0. "
    "`text` is the raw tweet; `img_text` is the OCR text ('' when there is none)."
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the MMHS150K archive from the dataset's project page (Gomez et al., "Exploring Hate
  Speech Detection in Multimodal Publications") and extract it so that `manual_dir` holds
  `MMHS150K_GT.json`, `img_resized/<id>.jpg`, `img_txt/<id>.json` and
  `splits/{train,val,test}_ids.txt`.
  """

  def _features(self):
    return {
      "id": tfds.features.Text(),
      "text": tfds.features.Text(),
      "img_text": tfds.features.Text(),
      "image": _image(),
      "votes": tfds.features.Tensor(shape=(3,), dtype=np.uint8),
      "label": tfds.features.ClassLabel(names=list(mmhs150k.TASK.class_names)),
    }

  def _encode(self, ex, ds):
    return {
      "id": ex.id,
      "text": ex.inputs["text"],
      "img_text": ex.meta.get("img_text") or "",
      "image": image_bytes(ex.inputs["image"]),
      "votes": np.asarray(ex.meta["votes"], np.uint8),
      "label": int(ex.label),
    }


BUILDERS: dict[str, type[_RawReaderBuilder]] = {
  "mmimdb": Mmimdb,
  "enrico": Enrico,
  "mmhs150k": Mmhs150k,
}
