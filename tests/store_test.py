"""Feature store: round trip, fixed-shape batches, atomic writes, and every bad-input case."""

import json

import numpy as np
import pytest

from flmoe_jax.data import store
from flmoe_jax.errors import StoreError

MODS = [
  store.ModalitySpec(name="text", dim=4, max_len=5, kind="tokens", encoder="test"),
  store.ModalitySpec(name="image", dim=3, max_len=2, kind="patches", encoder="test"),
]
TASK = store.TaskSpec(type="multiclass", num_classes=3)


def _split(n, seed):
  rng = np.random.default_rng(seed)
  mask = np.arange(5)[None] < rng.integers(1, 6, size=(n, 1))
  return store.SplitArrays(
    features={"text": rng.normal(size=(n, 5, 4)), "image": rng.normal(size=(n, 2, 3))},
    masks={"text": mask, "image": np.ones((n, 2), bool)},
    labels=rng.integers(0, 3, size=n),
    ids=[f"s{seed}_{i}" for i in range(n)],
  )


@pytest.fixture
def made(tmp_path):
  splits = {"train": _split(7, 0), "val": _split(3, 1)}
  path = store.write_store(
    tmp_path / "st",
    modalities=MODS,
    task=TASK,
    splits=splits,
    dtype="float32",
    extra_files={"ground_truth.json": {"a": 1}},
  )
  return path, splits


def test_round_trip(made):
  path, splits = made
  fs = store.open_store(path)
  assert fs.modality_names == ("text", "image")
  assert fs.counts == {"train": 7, "val": 3}
  assert fs.ground_truth() == {"a": 1}
  tr = fs.split("train")
  np.testing.assert_array_equal(tr.features[0], splits["train"].features["text"].astype(np.float32))
  np.testing.assert_array_equal(tr.masks[0], splits["train"].masks["text"])
  np.testing.assert_array_equal(tr.labels, splits["train"].labels)
  assert tr.ids == tuple(splits["train"].ids)
  # The mean-fill baseline is the mean over *valid* tokens of the train split.
  x, m = splits["train"].features["text"], splits["train"].masks["text"]
  np.testing.assert_allclose(fs.means()[0], x[m].mean(0), rtol=1e-6)
  np.testing.assert_allclose(
    fs.means()[1], splits["train"].features["image"].reshape(-1, 3).mean(0), rtol=1e-6
  )


def test_float16_is_default_and_memmapped(tmp_path):
  path = store.write_store(
    tmp_path / "st", modalities=MODS, task=TASK, splits={"train": _split(4, 0)}
  )
  fs = store.open_store(path)
  assert fs.split("train").features[0].dtype == np.float16
  assert isinstance(fs.split("train").features[0], np.memmap)


def test_batches_fixed_shape_and_padding(made):
  path, splits = made
  fs = store.open_store(path)
  bs = list(fs.batches("train", 3))
  assert len(bs) == 3
  for b in bs:
    assert b["x"][0].shape == (3, 5, 4) and b["x"][1].shape == (3, 2, 3)
    assert b["mask"][0].shape == (3, 5) and b["label"].shape == (3,)
  last = bs[-1]
  np.testing.assert_array_equal(last["weight"], [1, 0, 0])
  np.testing.assert_array_equal(last["index"], [6, -1, -1])
  assert not last["mask"][0][1:].any()
  assert len(list(fs.batches("train", 3, drop_remainder=True))) == 2


def test_shuffle_is_seeded(made):
  fs = store.open_store(made[0])
  order = lambda **kw: np.concatenate(
    [b["index"] for b in fs.batches("train", 7, shuffle=True, **kw)]
  )
  np.testing.assert_array_equal(np.sort(order(seed=1)), np.arange(7))
  cat = lambda **kw: np.concatenate(
    [b["index"] for b in fs.batches("train", 2, shuffle=True, **kw)]
  )
  np.testing.assert_array_equal(cat(seed=1, epoch=0), cat(seed=1, epoch=0))
  assert not np.array_equal(cat(seed=1, epoch=0), cat(seed=1, epoch=1))


def test_existing_store_not_overwritten_by_default(made, tmp_path):
  with pytest.raises(StoreError, match="already holds"):
    store.write_store(made[0], modalities=MODS, task=TASK, splits={"train": _split(2, 5)})
  store.write_store(
    made[0], modalities=MODS, task=TASK, splits={"train": _split(2, 5)}, overwrite=True
  )
  assert store.open_store(made[0]).counts == {"train": 2}


def test_failed_write_leaves_nothing(tmp_path):
  bad = _split(3, 0)
  bad.features["text"][1, 2, 0] = np.nan
  with pytest.raises(StoreError, match="NaN"):
    store.write_store(tmp_path / "st", modalities=MODS, task=TASK, splits={"train": bad})
  assert list(tmp_path.iterdir()) == []


def test_missing_store_and_manifest(tmp_path):
  with pytest.raises(StoreError, match="folder not found"):
    store.open_store(tmp_path / "nope")
  (tmp_path / "half").mkdir()
  with pytest.raises(StoreError, match="manifest.json: missing"):
    store.open_store(tmp_path / "half")


def test_malformed_manifest(made):
  path = made[0]
  (path / "manifest.json").write_text("{not json")
  with pytest.raises(StoreError, match="not valid JSON"):
    store.open_store(path)
  (path / "manifest.json").write_text(json.dumps({"format": "flmoe-feature-store", "version": 1}))
  with pytest.raises(StoreError, match="malformed manifest"):
    store.open_store(path)


def _edit_manifest(path, fn):
  m = json.loads((path / "manifest.json").read_text())
  fn(m)
  (path / "manifest.json").write_text(json.dumps(m))


def test_count_disagrees_with_manifest(made):
  path = made[0]
  _edit_manifest(path, lambda m: m["splits"].__setitem__("train", 8))
  with pytest.raises(
    StoreError, match=r"train/text\.npy: shape \(7, 5, 4\), manifest says \(8, 5, 4\)"
  ):
    store.open_store(path).split("train")


def test_shape_disagrees_with_manifest(made):
  path = made[0]
  _edit_manifest(path, lambda m: m["modalities"][1].__setitem__("dim", 9))
  with pytest.raises(StoreError, match="image_mean.npy"):
    store.open_store(path)


def test_wrong_dtype(made):
  path = made[0]
  np.save(path / "train" / "image.npy", np.zeros((7, 2, 3), np.float64))
  with pytest.raises(StoreError, match=r"image\.npy: dtype float64, manifest says float32"):
    store.open_store(path).split("train")
  np.save(path / "train" / "labels.npy", np.zeros(7, np.float32))
  np.save(path / "train" / "image.npy", np.zeros((7, 2, 3), np.float32))
  with pytest.raises(StoreError, match="labels.npy"):
    store.open_store(path).split("train")


def test_missing_split_and_modality(made):
  path = made[0]
  with pytest.raises(StoreError, match=r"no split 'test'"):
    store.open_store(path).split("test")
  (path / "val" / "image_mask.npy").unlink()
  with pytest.raises(StoreError, match=r"val/image_mask\.npy: missing"):
    store.open_store(path).split("val")


def test_ids_count(made):
  path = made[0]
  (path / "val" / "ids.json").write_text(json.dumps(["a", "b"]))
  with pytest.raises(StoreError, match="2 ids, manifest says 3"):
    store.open_store(path).split("val")


def test_nan_in_features_is_named(made):
  path = made[0]
  x = np.load(path / "train" / "text.npy")
  x[4, 0, 0] = np.nan
  np.save(path / "train" / "text.npy", x)
  fs = store.open_store(path)
  with pytest.raises(StoreError, match=r"text\.npy: NaN or Inf in features \(first at row 4"):
    fs.check_finite("train")
  with pytest.raises(StoreError, match=r"NaN or Inf in features \(row 4"):
    list(fs.batches("train", 7))


def test_label_values_checked(tmp_path):
  bad = _split(3, 0)
  bad.labels[0] = 3
  with pytest.raises(StoreError, match="labels outside"):
    store.write_store(tmp_path / "st", modalities=MODS, task=TASK, splits={"train": bad})


def test_bad_specs():
  with pytest.raises(StoreError, match="kind"):
    store.ModalitySpec(name="x", dim=2, max_len=2, kind="pixels")
  with pytest.raises(StoreError, match="binary"):
    store.TaskSpec(type="binary", num_classes=3)
