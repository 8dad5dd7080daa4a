"""Tests of the frozen encoders: equality with plain transformers, offline loading, errors.

The reference for every equality check is the same checkpoint loaded and run through `transformers`
directly (un-jitted), so these tests pin our loading (Flax/PyTorch weights, CLIP vision tower out of
a full CLIP checkpoint), tokenisation (buckets, truncation) and slicing (CLS dropped).
"""

import io

import jax.numpy as jnp
import numpy as np
import pytest
from _tiny_encoders import tiny_encoder, tiny_path

from flmoe_jax.errors import EncoderError, FlmoeError
from flmoe_jax.features import encoders
from flmoe_jax.features.encoders import UnreadableImageError, load_encoder, load_pil

SENTENCES = [
  "A man is eating food.",
  "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat",  # > 16 tokens
  "",
]


def _direct_text(path, texts, max_len):
  """last_hidden_state and attention mask of `path` run through transformers as documented."""
  from transformers import AutoTokenizer, FlaxAutoModel

  tok = AutoTokenizer.from_pretrained(path)
  model = FlaxAutoModel.from_pretrained(path)
  enc = tok(texts, padding="max_length", max_length=max_len, truncation=True, return_tensors="np")
  out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], train=False)
  return np.asarray(out.last_hidden_state), enc["attention_mask"].astype(bool)


def test_text_encoder_matches_transformers():
  enc = tiny_encoder("bert")
  assert (enc.hidden_size, enc.seq_len) == (32, 16)
  batch = enc.tokenize(SENTENCES, buckets=(8, 16))
  assert batch["input_ids"].shape == (3, 16)  # the long sentence needs the 16 bucket
  assert batch["truncated"].tolist() == [False, True, False]
  x, m = enc.encode(batch)
  x, m = np.asarray(x), np.asarray(m)
  ref, ref_mask = _direct_text(tiny_path("bert"), SENTENCES, 16)
  np.testing.assert_array_equal(m, ref_mask)
  np.testing.assert_allclose(x[m], ref[ref_mask], atol=1e-5, rtol=1e-5)
  assert not x[~m].any()  # padding states are zeroed
  # Special tokens are kept: position 0 is [CLS] and the last valid position is [SEP].
  ids = batch["input_ids"]
  assert (ids[:, 0] == 101).all() and ids[1, 15] == 102 and ids[2, 1] == 102


def test_text_buckets_do_not_change_valid_states():
  enc = tiny_encoder("bert")
  short = [SENTENCES[0], SENTENCES[2]]
  b8 = enc.tokenize(short, buckets=(8, 16))
  b16 = enc.tokenize(short, buckets=None)
  assert b8["input_ids"].shape == (2, 8) and b16["input_ids"].shape == (2, 16)
  x8, m8 = map(np.asarray, enc.encode(b8))
  x16, m16 = map(np.asarray, enc.encode(b16))
  np.testing.assert_array_equal(m8, m16[:, :8])
  np.testing.assert_allclose(x8, x16[:, :8], atol=1e-5)
  assert encoders.bucket_length(3, (8, 16), 16) == 8
  assert encoders.bucket_length(9, (8, 16), 16) == 16
  assert encoders.bucket_length(40, (8, 32), 16) == 16  # capped at max_len
  assert encoders.bucket_length(5, (), 16) == 5


def test_minilm_real_weights_match_transformers():
  path = encoders.minilm_path()
  enc = load_encoder("text", "minilm", max_len=16)
  assert (enc.hidden_size, enc.seq_len, enc.model_type) == (384, 16, "bert")
  texts = ["A man is eating food.", "A man is eating a piece of bread.", "A baby is crying."]
  x, m = enc(texts, pad_to_max_len=True)
  ref, ref_mask = _direct_text(path, texts, 16)
  np.testing.assert_array_equal(m, ref_mask)
  np.testing.assert_allclose(x[m], ref[ref_mask], atol=1e-4, rtol=1e-4)
  # The real weights behave like a sentence encoder (mean pooling over valid tokens).
  e = (x * m[..., None]).sum(1) / m.sum(1, keepdims=True)
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  assert e[0] @ e[1] > 0.6 > e[0] @ e[2]


@pytest.mark.parametrize(
  "name,processor", [("vit", "ViTImageProcessor"), ("clip", "CLIPImageProcessor")]
)
def test_image_encoder_matches_transformers(name, processor):
  from transformers import FlaxCLIPVisionModel, FlaxViTModel

  enc = tiny_encoder(name)
  assert (enc.hidden_size, enc.image_size, enc.patch_size, enc.seq_len) == (32, 32, 16, 4)
  assert (
    type(enc.processor).__name__ == processor
  )  # `clip` has no preprocessor_config: CLIP fallback
  rng = np.random.default_rng(0)
  images = [
    (rng.random((40, 56, 3)) * 255).astype(np.uint8),
    (rng.random((32, 32, 3)) * 255).astype(np.uint8),
  ]
  x, m = enc(images)
  assert x.shape == (2, 4, 32) and m.all()
  cls = FlaxViTModel if name == "vit" else FlaxCLIPVisionModel
  model = cls.from_pretrained(tiny_path(name))
  px = enc.processor(images=images, return_tensors="np")["pixel_values"]
  ref = np.asarray(model(px, train=False).last_hidden_state)
  assert ref.shape == (2, 5, 32)
  np.testing.assert_allclose(x, ref[:, 1:], atol=1e-5, rtol=1e-5)  # CLS dropped


@pytest.mark.parametrize("name", ["vit", "clip"])
def test_uint8_pixels_normalised_on_the_device_equal_the_processors(name, tmp_path):
  # The extraction's path: the processor's resize (and crop) on the host in uint8, its rescale and
  # normalisation on the device. Shapes that need a resize, a crop on either side, and a JPEG file.
  from PIL import Image

  enc = tiny_encoder(name)
  assert enc.pixel_format == "uint8"
  rng = np.random.default_rng(3)
  images = [(rng.random(shape) * 255).astype(np.uint8) for shape in ((37, 53, 3), (70, 41, 3))]
  Image.fromarray(images[0]).resize((90, 60)).save(tmp_path / "a.jpg", quality=90)
  images.append(tmp_path / "a.jpg")
  u8 = np.stack([enc.load_pixels(im) for im in images])
  s = enc.image_size
  assert u8.dtype == np.uint8 and u8.shape == (3, s, s, 3)
  ref = enc.preprocess_batch(images)["pixel_values"]  # the processor's own float path
  np.testing.assert_allclose(np.asarray(enc._recipe.normalise(u8)), ref, atol=1e-6, rtol=0)
  x8, m8 = map(np.asarray, enc.encode({"pixels": u8}))
  xf, _ = map(np.asarray, enc.encode({"pixel_values": ref}))
  np.testing.assert_allclose(x8, xf, atol=1e-5, rtol=1e-5)
  assert m8.all() and np.abs(xf).max() > 0.1
  # Descriptors keep their own float path.
  assert load_encoder("image", "hog").pixel_format == "float32"


def test_bfloat16_compute_is_close_to_float32():
  f32, bf16 = tiny_encoder("bert"), tiny_encoder("bert", dtype=jnp.bfloat16)
  assert bf16.dtype == "bfloat16" and bf16.digest() == f32.digest()
  b = f32.tokenize(SENTENCES, buckets=(16,))
  x32, m = map(np.asarray, f32.encode(b))
  assert bf16.model.module.dtype == jnp.bfloat16  # compute dtype; params stay float32
  x16 = np.asarray(bf16.encode(b)[0])  # returned as float32 by default (out_dtype)
  err = np.abs(x16 - x32)[m]
  assert 0 < err.mean() < 0.05 * np.abs(x32[m]).mean()


def test_params_digest_identifies_weights():
  a = tiny_encoder("vit")
  b = load_encoder("image", tiny_path("vit"))
  c = tiny_encoder("vit_seed1")
  assert a.digest() == b.digest() != c.digest()
  assert a.info()["params_digest"] == a.digest()


def test_missing_models_say_how_to_get_them(tmp_path):
  with pytest.raises(EncoderError, match="allow-download") as e:
    load_encoder("text", "roberta-base")
  assert "\n" not in str(e.value)
  with pytest.raises(EncoderError, match="does not exist"):
    load_encoder("image", tmp_path / "no" / "such" / "folder")
  with pytest.raises(EncoderError, match="'text' or 'image'"):
    load_encoder("audio", "x")
  with pytest.raises(EncoderError, match="image model"):
    load_encoder("text", tiny_path("vit"))
  with pytest.raises(EncoderError, match="max_len"):
    load_encoder("text", tiny_path("bert"), max_len=100)  # 64 positions
  with pytest.raises(EncoderError, match="compute dtype"):
    load_encoder("text", tiny_path("bert"), dtype="float16")
  assert issubclass(EncoderError, FlmoeError)


def test_unreadable_images(tmp_path):
  from PIL import Image

  good = tmp_path / "good.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
  assert load_pil(good).size == (8, 8)
  assert load_pil(np.zeros((5, 6), np.uint8)).mode == "RGB"
  buf = io.BytesIO()
  Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(buf, format="PNG")
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(buf.getvalue()[:60])
  garbage = tmp_path / "garbage.jpg"
  garbage.write_bytes(b"not an image at all")
  for bad in (truncated, garbage, tmp_path / "missing.png", np.zeros((4, 4), np.float32), 3):
    with pytest.raises(UnreadableImageError):
      load_pil(bad)


def test_easyvqa_demo_encoders(tmp_path):
  text, image = encoders.easyvqa_demo_encoders(tmp_path)
  assert text == encoders.minilm_path()
  mtime = (tmp_path / "tiny-vit" / "flax_model.msgpack").stat().st_mtime_ns
  assert encoders.easyvqa_demo_encoders(tmp_path)[1] == image  # reused, not rewritten
  assert (tmp_path / "tiny-vit" / "flax_model.msgpack").stat().st_mtime_ns == mtime
  enc = load_encoder("image", image)
  assert (enc.hidden_size, enc.image_size, enc.seq_len) == (64, 64, 64)


def test_pixel_patches_are_the_image_blocks():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  enc = load_encoder("image", "pixels:32/8")
  assert (enc.name, enc.hidden_size, enc.seq_len) == ("pixels:32/8", 192, 16)
  x, m = enc([img])
  assert x.shape == (1, 16, 192) and m.all()
  block = img[8:16, 16:24].astype(np.float32) / 127.5 - 1.0  # patch (row 1, column 2) = 6
  np.testing.assert_allclose(x[0, 6], block.reshape(-1), atol=1e-6)
  # Another size is resized to S x S first.
  assert enc([rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)])[0].shape == (1, 16, 192)


def test_hog_patches_see_edge_orientation_and_colour():
  img = np.full((32, 32, 3), 255, np.uint8)
  img[12:, :] = (255, 0, 0)  # red below row 12: a horizontal edge in patch row 1 (rows 8-15)
  enc = load_encoder("image", "hog:32/8")
  assert enc.hidden_size == 4 * 9 + 7
  x, _ = enc([img])
  f = x[0].reshape(4, 4, -1)
  hist = f[1, 0, :36].reshape(4, 9)  # 2 x 2 cells (rows 8-11 and 12-15) x 9 orientation bins
  # A horizontal edge has a vertical gradient (90 degrees): bin 4 (80-100 degrees) takes it all.
  assert hist[:, 4].sum() > 0.9 and np.abs(np.delete(hist, 4, axis=1)).max() < 1e-6
  np.testing.assert_allclose(f[0, 0, :37], 0.0, atol=1e-6)  # flat white: no edges
  np.testing.assert_allclose(f[3, 0, 37:40], [1.0, -1.0, -1.0], atol=1e-6)  # mean colour: red
  np.testing.assert_allclose(f[3, 0, 40:], 0.0, atol=1e-6)  # colour std of a flat patch
  vertical, _ = enc([np.ascontiguousarray(img.transpose(1, 0, 2))])
  vhist = vertical[0].reshape(4, 4, -1)[0, 1, :36].reshape(4, 9)
  # A vertical edge (0 degrees) sits between bins 0 and 8 (10 and 170 degrees): half each.
  np.testing.assert_allclose(vhist[:, 0], vhist[:, 8], atol=1e-6)
  assert vhist[:, [0, 8]].sum() > 0.9


def test_patch_encoder_names_are_checked():
  with pytest.raises(EncoderError, match="image encoder"):
    load_encoder("text", "pixels")
  for bad in ("pixels:64", "hog:64/x", "pixels:60/8", "hog:63/9"):
    with pytest.raises(EncoderError):
      load_encoder("image", bad)
