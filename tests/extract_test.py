"""Tests of feature extraction: store contents, resumption after a crash, refusals, unreadable
images.

Tiny encoders (tests/_tiny_encoders.py), 8 fake CPU devices (batches are sharded and padded), chunks
of 8 examples and text buckets (8, 16) so that a few chunks and both buckets are exercised in a
second.
"""

import collections.abc
import io
import json
import pathlib

import jax
import numpy as np
import pytest
from _tiny_encoders import tiny_encoder

from flmoe_jax.data.raw.base import RawDataset, RawExample, RawModality
from flmoe_jax.data.store import TaskSpec, open_store
from flmoe_jax.errors import DatasetError, EncoderError, StoreError
from flmoe_jax.features import ExtractionOptions, extract
from flmoe_jax.features.extract import extract_features, partial_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORDS = "the a red blue green circle square triangle is there what color shape of image".split()


def opts(**changes) -> dict:
  """`extract_features`'s keyword arguments of these tests: small batches and chunks, quiet."""
  small = dict(batch_size=4, chunk_size=8, text_buckets=(8, 16))
  return dict(options=ExtractionOptions(**{**small, **changes}), progress=False)


OPTS = opts()


def _png(path: pathlib.Path, rng) -> pathlib.Path:
  from PIL import Image

  Image.fromarray((rng.random((24, 36, 3)) * 255).astype(np.uint8)).save(path)
  return path


def make_raw(tmp_path, *, sizes=(20, 6, 5), bad=(), seed=0) -> RawDataset:
  """A text + image multiclass toy set; images alternate between PNG files and arrays.

  Args:
    bad: (split, index) pairs whose image is a corrupt file.
  """
  rng = np.random.default_rng(seed)
  img_dir = tmp_path / "images"
  img_dir.mkdir(exist_ok=True)
  splits = {}
  for split, n in zip(("train", "val", "test"), sizes):
    examples = []
    for i in range(n):
      text = " ".join(rng.choice(WORDS, int(rng.integers(1, 22))))
      if (split, i) in bad:
        image = img_dir / f"{split}{i}.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\n broken")
      elif i % 2:
        image = _png(img_dir / f"{split}{i}.png", rng)
      else:
        image = (rng.random((30, 20, 3)) * 255).astype(np.uint8)
      examples.append(
        RawExample(f"{split}{i}", {"text": text, "image": image}, int(rng.integers(0, 3)))
      )
    splits[split] = examples
  return RawDataset(
    name="toy",
    modalities=[RawModality("text", "text"), RawModality("image", "image")],
    task=TaskSpec("multiclass", 3),
    splits=splits,
    info={"layout": "toy"},
  )


def _arrays(path) -> dict[str, np.ndarray]:
  """Every array file of a store, keyed by relative path."""
  path = pathlib.Path(path)
  return {str(p.relative_to(path)): np.load(p) for p in sorted(path.rglob("*.npy"))}


_TIMING = {}  # the reference extraction's ExtractionTiming


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted extraction of the toy set (the baseline of several tests)."""
  tmp = tmp_path_factory.mktemp("ref")
  raw = make_raw(tmp)
  timing = extract.ExtractionTiming()
  out = extract_features(
    raw,
    tmp / "store",
    text_encoder=tiny_encoder("bert"),
    image_encoder=tiny_encoder("vit"),
    timing=timing,
    **OPTS,
  )
  _TIMING["reference"] = timing
  return raw, out


def test_timing_says_where_the_encoding_loop_waited(reference):
  t = _TIMING["reference"]
  # 20 + 6 + 5 examples, batches of 4 inside chunks of 8 (chunks never span splits):
  # train 4+4 | 4+4 | 4, val 4+2, test 4+1.
  assert (t.examples, t.batches) == (31, 9)
  parts = (t.host_wait_s, t.device_wait_s, t.write_s)
  assert min(parts) >= 0 and t.prepare_s > 0 and t.loop_s > 0
  assert sum(parts) <= t.loop_s  # disjoint parts of the loop's wall time
  line = t.summary()
  assert line.startswith(f"encoding loop {t.loop_s:.1f} s: host wait ") and "prepare" in line
  # Text padding: the real tokens of every text (special tokens included), the bucketed slots, and
  # max_len (16) for every row of the 9 batches without buckets (4 rows padded up to a multiple of
  # the local device count).
  n_dev = jax.local_device_count()
  rows = -(-4 // n_dev) * n_dev
  te = tiny_encoder("bert")
  raw = reference[0]
  real = sum(
    int(te.tokenize([e.inputs["text"] for e in ex], buckets=None)["attention_mask"].sum())
    for ex in raw.splits.values()
  )
  assert t.text_tokens == real and t.text_slots_unbucketed == 9 * rows * 16
  assert real < t.text_slots < t.text_slots_unbucketed  # the 8-token bucket saved some
  assert "text padding" in line


def test_store_contents(reference):
  raw, out = reference
  te, ie = tiny_encoder("bert"), tiny_encoder("vit")
  fs = open_store(out)
  assert fs.counts == {"train": 20, "val": 6, "test": 5}
  assert [(m.name, m.kind, m.dim, m.max_len) for m in fs.modalities] == [
    ("text", "tokens", 32, 16),
    ("image", "patches", 32, 4),
  ]
  assert fs.dtype == "float16" and not partial_dir(out).exists()
  ext = fs.manifest["extraction"]
  assert ext["encoders"]["text"]["params_digest"] == te.digest()
  assert ext["encoders"]["image"]["seq_len"] == 4 and ext["num_skipped"] == 0
  for split, examples in raw.splits.items():
    s = fs.split(split)
    assert list(s.ids) == [e.id for e in examples]
    np.testing.assert_array_equal(s.labels, [e.label for e in examples])
    texts = [e.inputs["text"] for e in examples]
    tok = te.tokenize(texts, buckets=None)
    # Truncation is counted per split.
    assert ext["truncated"]["text"][split] == int(tok["truncated"].sum())
    x, m = map(np.asarray, te.encode(tok))
    np.testing.assert_array_equal(s.masks[0], m)
    np.testing.assert_allclose(s.features[0], x, atol=2e-2, rtol=1e-2)  # float16 storage
    assert not np.asarray(s.features[0])[~m].any()
    xi, mi = ie([e.inputs["image"] for e in examples])
    np.testing.assert_allclose(s.features[1], xi, atol=2e-2, rtol=1e-2)
    assert s.masks[1].all()
  assert sum(ext["truncated"]["text"].values()) > 0
  # The mean-fill baseline: train mean over valid tokens.
  tr = fs.split("train")
  x, m = np.asarray(tr.features[0], np.float64), np.asarray(tr.masks[0])
  np.testing.assert_allclose(fs.means()[0], x[m].mean(0), atol=1e-4)


def test_resume_after_crash_is_byte_equal(reference, tmp_path, monkeypatch):
  _, ref_out = reference
  raw = make_raw(tmp_path)
  out = tmp_path / "store"
  enc = dict(text_encoder=tiny_encoder("bert"), image_encoder=tiny_encoder("vit"))

  class Crash(Exception):
    pass

  written = []

  def crash_after_second(split, k):
    written.append((split, k))
    if len(written) == 2:
      raise Crash

  monkeypatch.setattr(extract, "_after_chunk_hook", crash_after_second)
  with pytest.raises(Crash):
    extract_features(raw, out, **enc, **OPTS)
  part = partial_dir(out)
  assert not out.exists()
  assert sorted(p.name for p in (part / "train").glob("chunk_*.npz")) == [
    "chunk_00000.npz",
    "chunk_00001.npz",
  ]
  assert json.loads((part / "progress.json").read_text())["done"]["train"] == [0, 1]

  written.clear()
  monkeypatch.setattr(extract, "_after_chunk_hook", lambda s, k: written.append((s, k)))
  extract_features(raw, out, **enc, **OPTS)
  assert written == [("train", 2), ("val", 0), ("test", 0)]  # the two finished chunks were reused
  assert not part.exists()
  got, want = _arrays(out), _arrays(ref_out)
  assert got.keys() == want.keys()
  for k in want:
    assert got[k].dtype == want[k].dtype and got[k].tobytes() == want[k].tobytes(), k
  assert (out / "train" / "ids.json").read_text() == (ref_out / "train" / "ids.json").read_text()


def test_partial_of_another_encoder_is_refused(tmp_path, monkeypatch):
  raw = make_raw(tmp_path, sizes=(12, 2, 2))
  out = tmp_path / "store"

  def stop(split, k):
    raise KeyboardInterrupt

  monkeypatch.setattr(extract, "_after_chunk_hook", stop)
  with pytest.raises(KeyboardInterrupt):
    extract_features(
      raw, out, text_encoder=tiny_encoder("bert"), image_encoder=tiny_encoder("vit"), **OPTS
    )
  monkeypatch.setattr(extract, "_after_chunk_hook", None)
  with pytest.raises(EncoderError, match="partial extraction made differently.*'image'") as e:
    extract_features(
      raw, out, text_encoder=tiny_encoder("bert"), image_encoder=tiny_encoder("vit_seed1"), **OPTS
    )
  assert "\n" not in str(e.value)
  # Different data (a limit) is refused too.
  with pytest.raises(EncoderError, match="examples differ"):
    extract_features(
      raw,
      out,
      text_encoder=tiny_encoder("bert"),
      image_encoder=tiny_encoder("vit"),
      **opts(limit_per_split=4),
    )


def test_existing_store_reused_or_refused(reference, monkeypatch):
  raw, out = reference
  calls = []
  monkeypatch.setattr(extract, "_after_chunk_hook", lambda s, k: calls.append(k))
  before = (out / "manifest.json").read_text()
  # Same extraction: nothing to do.
  assert (
    extract_features(
      raw, out, text_encoder=tiny_encoder("bert"), image_encoder=tiny_encoder("vit"), **OPTS
    )
    == out
  )
  assert calls == [] and (out / "manifest.json").read_text() == before
  with pytest.raises(StoreError, match="different feature store.*weights.*overwrite"):
    extract_features(
      raw, out, text_encoder=tiny_encoder("bert"), image_encoder=tiny_encoder("vit_seed1"), **OPTS
    )
  with pytest.raises(StoreError, match="dtype"):
    extract_features(
      raw,
      out,
      text_encoder=tiny_encoder("bert"),
      image_encoder=tiny_encoder("vit"),
      **opts(dtype="float32"),
    )


def test_not_a_store_is_never_replaced(tmp_path):
  out = tmp_path / "notes"
  out.mkdir()
  (out / "important.txt").write_text("keep me")
  with pytest.raises(StoreError, match="not a feature store"):
    extract_features(
      make_raw(tmp_path, sizes=(2, 1, 1)),
      out,
      text_encoder=tiny_encoder("bert"),
      image_encoder=tiny_encoder("vit"),
      overwrite=True,
      **OPTS,
    )
  assert (out / "important.txt").exists()


def test_unreadable_images_fail_with_the_full_list(tmp_path):
  raw = make_raw(tmp_path, bad={("train", 3), ("test", 1)})
  out = tmp_path / "store"
  with pytest.raises(
    EncoderError, match=r"2 unreadable image\(s\): train/train3 \(image\).*on-error skip"
  ):
    extract_features(
      raw, out, text_encoder=tiny_encoder("bert"), image_encoder=tiny_encoder("vit"), **OPTS
    )
  listed = json.loads((partial_dir(out) / "unreadable.json").read_text())
  assert [(f["split"], f["id"]) for f in listed] == [("train", "train3"), ("test", "test1")]
  assert not out.exists()


def test_unreadable_images_skipped_and_recorded(tmp_path):
  raw = make_raw(tmp_path, bad={("train", 3), ("test", 1)})
  out = extract_features(
    raw,
    tmp_path / "store",
    text_encoder=tiny_encoder("bert"),
    image_encoder=tiny_encoder("vit"),
    **opts(on_error="skip"),
  )
  fs = open_store(out)
  assert fs.counts == {"train": 19, "val": 6, "test": 4}
  assert "train3" not in fs.split("train").ids and "test1" not in fs.split("test").ids
  ext = fs.manifest["extraction"]
  assert ext["num_skipped"] == 2
  assert {(s["id"], s["modality"]) for s in ext["skipped"]} == {
    ("train3", "image"),
    ("test1", "image"),
  }


def test_shared_image_encoder_two_modalities_multilabel(tmp_path):
  """ENRICO-like: two image modalities through one shared encoder, no text; a multilabel task."""
  rng = np.random.default_rng(1)
  imgs = [(rng.random((32, 32, 3)) * 255).astype(np.uint8) for _ in range(6)]
  buf = io.BytesIO()
  from PIL import Image

  Image.fromarray(imgs[0]).save(buf, format="PNG")
  examples = [
    RawExample(
      f"u{i}",
      {"screenshot": imgs[i], "wireframe": buf.getvalue() if i == 0 else imgs[5 - i]},
      (rng.random(4) < 0.5).astype(np.uint8),
    )
    for i in range(6)
  ]
  raw = RawDataset(
    "ui",
    [RawModality("screenshot", "image"), RawModality("wireframe", "image")],
    TaskSpec("multilabel", 4),
    {"train": examples[:4], "test": examples[4:]},
  )
  with pytest.raises(EncoderError, match="needs an encoder"):
    extract_features(raw, tmp_path / "x", text_encoder=tiny_encoder("bert"), **OPTS)
  out = extract_features(
    raw, tmp_path / "store", image_encoder=tiny_encoder("vit"), **opts(dtype="float32")
  )
  fs = open_store(out)
  tr = fs.split("train")
  assert tr.labels.dtype == np.uint8 and tr.labels.shape == (4, 4)
  # Example 0 has the same picture as an array and as PNG bytes: identical features.
  np.testing.assert_array_equal(tr.features[0][0], tr.features[1][0])
  # The wireframe of train example 1 is the screenshot of test example 4 (imgs[4]).
  np.testing.assert_allclose(tr.features[1][1], fs.split("test").features[0][0], atol=1e-5)


def test_limit_and_bad_labels(tmp_path):
  raw = make_raw(tmp_path, sizes=(10, 3, 3))
  out = extract_features(
    raw,
    tmp_path / "small",
    text_encoder=tiny_encoder("bert"),
    image_encoder=tiny_encoder("vit"),
    **opts(limit_per_split=2),
  )
  assert open_store(out).counts == {"train": 2, "val": 2, "test": 2}
  raw.splits["val"][0] = RawExample("val0", raw.splits["val"][0].inputs, 7)
  with pytest.raises(DatasetError, match="val0.*label"):
    extract_features(
      raw,
      tmp_path / "bad",
      text_encoder=tiny_encoder("bert"),
      image_encoder=tiny_encoder("vit"),
      **OPTS,
    )


class _LazySplit(collections.abc.Sequence):
  """A non-list split (like the TFDS adapter) that records which examples were read."""

  def __init__(self, examples):
    self._examples, self.read = examples, set()

  def __len__(self):
    return len(self._examples)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    self.read.add(index % len(self))
    return self._examples[index]


def test_lazy_splits_are_read_batch_by_batch(tmp_path):
  raw = make_raw(tmp_path, sizes=(30, 3, 3))
  lazy = _LazySplit(raw.splits["train"])
  raw.splits["train"] = lazy
  out = extract_features(
    raw,
    tmp_path / "store",
    text_encoder=tiny_encoder("bert"),
    image_encoder=tiny_encoder("vit"),
    **opts(limit_per_split=6),
  )
  assert open_store(out).split("train").ids == tuple(f"train{i}" for i in range(6))
  assert max(lazy.read) < 6  # nothing past the limit was decoded


def test_cli_entry_point(tmp_path, monkeypatch):
  """`add_cli` + `run_extraction`: a registered reader, encoders given as folders."""
  import argparse

  from _tiny_encoders import tiny_path

  from flmoe_jax.data.raw import base

  raw = make_raw(tmp_path, sizes=(4, 2, 2))
  monkeypatch.setitem(base.READERS, "toy-cli", lambda raw_dir, on_error="fail": raw)
  parser = argparse.ArgumentParser()
  extract.add_cli(parser.add_subparsers())
  out = tmp_path / "cli-store"
  args = parser.parse_args(
    [
      "features",
      "--dataset",
      "toy-cli",
      "--out",
      str(out),
      "--text-encoder",
      str(tiny_path("bert")),
      "--image-encoder",
      str(tiny_path("vit")),
      "--max-len",
      "16",
      "--batch-size",
      "4",
      "--no-progress",
    ]
  )
  assert args.fn(args, []) == 0
  fs = open_store(out)
  assert fs.counts == {"train": 4, "val": 2, "test": 2}
  assert fs.manifest["extraction"]["text_buckets"] == [32, 64, 128, 320]
  with pytest.raises(EncoderError, match="--dataset NAME and --out"):
    args = parser.parse_args(["features", "--dataset", "toy-cli"])
    args.fn(args, [])


def test_examples_sharing_an_image_file_encode_it_once(tmp_path):
  """VQA-style data (several questions an image): each distinct file is encoded once a batch, in a
  smaller image batch, and every example still gets its image's features."""
  from flmoe_jax.features.encoders import load_encoder

  rng = np.random.default_rng(0)
  files = [_png(tmp_path / f"im{i}.png", rng) for i in range(3)]
  examples = [
    RawExample(f"q{i}", {"text": f"question {i}", "image": files[i % 3]}, i % 2) for i in range(12)
  ]
  raw = RawDataset(
    name="toyvqa",
    modalities=[RawModality("text", "text"), RawModality("image", "image")],
    task=TaskSpec("multiclass", 2),
    splits={"train": examples},
  )
  image = load_encoder("image", "pixels:16/8")
  rows = []
  encode = image.encode

  def counting_encode(batch, params=None, **kw):
    rows.append(batch["pixel_values"].shape[0])
    return encode(batch, params, **kw)

  image.encode = counting_encode
  out = extract_features(
    raw,
    tmp_path / "store",
    text_encoder=tiny_encoder("bert"),
    image_encoder=image,
    options=ExtractionOptions(batch_size=16, chunk_size=16),
    progress=False,
  )
  # One batch of 12 examples (global batch 16 on 8 devices), 3 distinct images: an image batch of
  # 8 rows (half the global batch, still a multiple of the device count).
  assert rows == [8]
  s = open_store(out).split("train")
  want, _ = image([e.inputs["image"] for e in examples])
  np.testing.assert_allclose(s.features[1], want, atol=1e-2)


def test_a_configs_features_block_becomes_the_features_config(monkeypatch):
  """configs/easyvqa.py's `features` block maps onto FeaturesConfig key by key; flags win; a
  misspelt key is refused, never ignored."""
  from flmoe_jax import config as config_lib
  from flmoe_jax.features.config import FeaturesConfig

  seen = {}
  monkeypatch.setattr(extract, "run_extraction", lambda cfg, out: seen.update(cfg=cfg, out=out))
  cfg = config_lib.load_config(str(ROOT / "configs" / "easyvqa.py"))
  extract.features_from_config(cfg, batch_size=8, overwrite=True)
  got = seen["cfg"]
  assert isinstance(got, FeaturesConfig) and seen["out"] == cfg.store
  assert (got.dataset, got.text_encoder, got.image_encoder) == ("easyvqa", "minilm", "hog:64/16")
  assert got.text_buckets == (16, 32) and got.text_max_len == 32 and got.raw == ""
  assert got.batch_size == 8 and got.overwrite  # the changes win over the block
  with cfg.unlocked():
    cfg.features.batchsize = 4
  with pytest.raises(EncoderError, match=r"unknown key\(s\) \['batchsize'\]"):
    extract.features_from_config(cfg)


def test_extraction_options_are_checked_when_made_and_read_from_the_features_config():
  from flmoe_jax.features.config import FeaturesConfig

  with pytest.raises(StoreError, match="store dtype 'float64'"):
    ExtractionOptions(dtype="float64")
  with pytest.raises(EncoderError, match="on_error 'ignore'"):
    ExtractionOptions(on_error="ignore")
  with pytest.raises(EncoderError, match="batch_size and chunk_size must be positive"):
    ExtractionOptions(chunk_size=0)
  assert ExtractionOptions(limit_per_split=0).limit_per_split is None  # 0 (the flag's "all")
  assert ExtractionOptions(text_buckets=[8, 16]).text_buckets == (8, 16)
  cfg = FeaturesConfig(dataset="easyvqa", batch_size=8, dtype="float32", limit_per_split=5)
  got = ExtractionOptions.of(cfg)
  assert (got.batch_size, got.dtype, got.limit_per_split) == (8, "float32", 5)
  assert got.text_buckets == cfg.text_buckets and got.num_workers is None
