"""TFDS builders on the tiny raw fixtures: array_record without TensorFlow, read back through
`tfds.data_source` and `load_raw_from_tfds`, compared example by example with the raw readers."""

import numpy as np
import pytest
from PIL import Image
from raw_readers_test import make_enrico, make_mmhs, make_mmimdb

from flmoe_jax.data.raw import load_enrico, load_mmhs150k, load_mmimdb, load_raw, verify_images
from flmoe_jax.errors import DatasetError

tfds = pytest.importorskip("tensorflow_datasets")
tfds_pkg = pytest.importorskip("flmoe_jax.data.tfds")


def _rgb(path):
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def mmimdb_prepared(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("mmimdb")
  raw = make_mmimdb(tmp / "raw")
  data_dir = tmp / "tfds"
  builder = tfds_pkg.prepare_tfds("mmimdb", raw, data_dir)
  return raw, data_dir, builder


def test_mmimdb_data_source_matches_reader(mmimdb_prepared):
  raw, data_dir, builder = mmimdb_prepared
  assert builder.info.file_format.value == "array_record"
  ds = load_mmimdb(raw)
  for split, examples in ds.splits.items():
    source = tfds.data_source("mmimdb", data_dir=str(data_dir), split=split)
    assert len(source) == len(examples)
    for i, ex in enumerate(examples):  # written in the reader's order
      rec = source[i]
      assert rec["id"].decode() == ex.id
      assert rec["text"].decode() == ex.inputs["text"]
      np.testing.assert_array_equal(rec["label"], ex.label)
      np.testing.assert_array_equal(rec["image"], _rgb(ex.inputs["image"]))
  assert builder.info.metadata["class_names"][:2] == ["drama", "comedy"]


def test_mmimdb_load_raw_from_tfds_round_trip(mmimdb_prepared):
  raw, data_dir, _ = mmimdb_prepared
  want = load_mmimdb(raw)
  got = load_raw("tfds:mmimdb", data_dir)
  assert got.task == want.task and list(got.modalities) == list(want.modalities)
  assert list(got.splits) == ["train", "val", "test"]
  for split, examples in want.splits.items():
    lazy = got.splits[split]
    assert len(lazy) == len(examples)
    for a, b in zip(lazy, examples, strict=True):
      assert a.id == b.id and a.inputs["text"] == b.inputs["text"]
      np.testing.assert_array_equal(a.label, b.label)
      assert a.inputs["image"].dtype == np.uint8 and a.inputs["image"].shape[-1] == 3
      np.testing.assert_array_equal(a.inputs["image"], _rgb(b.inputs["image"]))
  train = got.splits["train"]
  assert train[-1].id == want.splits["train"][-1].id
  assert [e.id for e in train[1:3]] == [e.id for e in want.splits["train"][1:3]]
  with pytest.raises(IndexError):
    train[len(train)]
  assert verify_images(got) is got  # lazy tfds splits are not re-checked
  assert (
    got.info["tfds_config"] == "official" and got.info["prepared_from"]["split_mode"] == "official"
  )


def test_mmimdb_reference_config(tmp_path, mmimdb_prepared):
  raw, _, _ = mmimdb_prepared
  tfds_pkg.prepare_tfds("mmimdb", raw, tmp_path, config="reference")
  got = tfds_pkg.load_raw_from_tfds("mmimdb", tmp_path, split_mode="reference")
  want = load_mmimdb(raw, split_mode="reference")
  assert {s: [e.id for e in v] for s, v in got.splits.items()} == {
    s: [e.id for e in v] for s, v in want.splits.items()
  }
  source = tfds.data_source("mmimdb/reference", data_dir=str(tmp_path), split="test")
  assert len(source) == len(want.splits["test"])


def test_enrico_builder(tmp_path):
  raw = make_enrico(tmp_path / "raw")  # palette-mode PNG wireframes: stored as RGB
  tfds_pkg.prepare_tfds("enrico", raw, tmp_path / "tfds")
  got = tfds_pkg.load_raw_from_tfds("enrico", tmp_path / "tfds")
  want = load_enrico(raw)
  assert got.task.num_classes == 20  # the ClassLabel holds the 20 real topics
  assert [s["id"] for s in got.skipped] == ["50105", "50109"]
  for split, examples in want.splits.items():
    assert [e.id for e in got.splits[split]] == [e.id for e in examples]
    for a, b in zip(got.splits[split], examples, strict=True):
      assert got.task.class_names[a.label] == want.task.class_names[b.label]
      np.testing.assert_array_equal(a.inputs["screenshot"], _rgb(b.inputs["screenshot"]))
      np.testing.assert_array_equal(a.inputs["wireframe"], _rgb(b.inputs["wireframe"]))


def test_mmhs150k_builder_skip_and_ocr(tmp_path):
  raw = make_mmhs(tmp_path / "raw", missing_image=True)
  with pytest.raises(DatasetError, match="112.jpg is missing"):
    tfds_pkg.prepare_tfds("mmhs150k", raw, tmp_path / "tfds_fail")
  tfds_pkg.prepare_tfds("mmhs150k", raw, tmp_path / "tfds", on_error="skip")
  got = tfds_pkg.load_raw_from_tfds("mmhs150k", tmp_path / "tfds", append_ocr=True)
  want = load_mmhs150k(raw, on_error="skip", append_ocr=True)
  assert [s["id"] for s in got.skipped] == ["112"]
  for split, examples in want.splits.items():
    assert len(got.splits[split]) == len(examples)
    for a, b in zip(got.splits[split], examples, strict=True):
      assert (a.id, a.inputs["text"], a.label, a.meta) == (b.id, b.inputs["text"], b.label, b.meta)
  with pytest.raises(DatasetError, match="only apply to mmhs150k"):
    tfds_pkg.load_raw_from_tfds("enrico", tmp_path / "tfds", append_ocr=True)


def test_not_prepared_and_unknown(tmp_path):
  with pytest.raises(DatasetError, match="no prepared dataset"):
    tfds_pkg.load_raw_from_tfds("enrico", tmp_path)
  with pytest.raises(DatasetError, match="no TFDS builder"):
    tfds_pkg.load_raw_from_tfds("imagenet", tmp_path)
  with pytest.raises(DatasetError, match="does not exist"):
    tfds_pkg.prepare_tfds("enrico", tmp_path / "missing", tmp_path / "tfds")
  assert tfds_pkg.BUILDERS["mmimdb"].MANUAL_DOWNLOAD_INSTRUCTIONS.strip()
