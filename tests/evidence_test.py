"""The label-free evidence of easy-vqa: shape masks, shape patches, attribute words."""

import numpy as np
import pytest
from PIL import Image

from flmoe_jax.data import evidence


def _image(shape_box=(10, 20, 30, 44), colour=(200, 30, 40), seed=0):
  """A tinted background with small noise and one filled rectangle [y0, y1) x [x0, x1)."""
  rng = np.random.default_rng(seed)
  a = np.full((64, 64, 3), (247, 236, 231), np.int16) + rng.integers(-4, 5, (64, 64, 3))
  y0, y1, x0, x1 = shape_box
  a[y0:y1, x0:x1] = colour
  return np.clip(a, 0, 255).astype(np.uint8)


def test_shape_mask_is_exactly_the_drawn_shape():
  m = evidence.shape_mask(_image())
  want = np.zeros((64, 64), bool)
  want[10:20, 30:44] = True
  np.testing.assert_array_equal(m, want)
  # A pale shape (yellow on white) still differs from the background in one channel.
  pale = evidence.shape_mask(_image(colour=(250, 240, 60)))
  np.testing.assert_array_equal(pale, want)


def test_patch_mask_counts_patches_with_enough_shape_pixels():
  m = np.zeros((64, 64), bool)
  m[10:20, 30:44] = True  # rows 10-19 span patch rows 1-2, columns 30-43 span patch columns 3-5
  got = evidence.patch_mask(m, 64, 8).reshape(8, 8)
  want = np.zeros((8, 8), bool)
  # Shares: row 1 holds 6 of 8 rows, row 2 holds 4; column 3 holds 2 of 8 columns (6 x 2 / 64 =
  # 19% and 4 x 2 / 64 = 12.5%, both >= 10%), columns 4 and 5 are full.
  want[1:3, 3:6] = True
  np.testing.assert_array_equal(got, want)
  # With a 20% floor, both column-3 patches (19% and 12.5%) drop out.
  strict = evidence.patch_mask(m, 64, 8, min_fraction=0.2).reshape(8, 8)
  want[1:3, 3] = False
  np.testing.assert_array_equal(strict, want)
  # On a coarser encoder grid (resized to 32 px: rows 5-9, columns 15-21; patch 8 -> 4 x 4) the
  # shape covers 18 and 12 pixels of patches (0, 2) and (1, 2), one column of (0, 1) and (1, 1).
  coarse = evidence.patch_mask(m, 32, 8).reshape(4, 4)
  assert coarse[0, 2] and coarse[1, 2] and coarse.sum() == 2


def test_shape_masks_of_real_easyvqa_images_have_their_shapes():
  """Images of the wheel whose questions name the shape: the mask fills its bounding box as the
  shape does (rectangle ~1, circle pi/4, triangle 1/2), in the colour the questions name."""
  easy_vqa = pytest.importorskip("easy_vqa")
  paths = easy_vqa.get_train_image_paths()
  # Image id -> (shape, colour), from the wheel's own answers to "what shape"/"what color" questions.
  known = {
    0: ("rectangle", "blue"),
    2: ("triangle", "red"),
    3: ("rectangle", "brown"),
    4: ("circle", "red"),
    5: ("triangle", "yellow"),
    10: ("circle", "brown"),
  }
  fill = {"rectangle": (0.95, 1.0), "circle": (0.72, 0.85), "triangle": (0.4, 0.62)}
  for image_id, (shape, colour) in known.items():
    m = evidence.shape_mask(paths[image_id])
    ys, xs = np.nonzero(m)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    lo, hi = fill[shape]
    assert lo <= m.sum() / box <= hi, (image_id, shape, m.sum() / box)
    rgb = np.asarray(Image.open(paths[image_id]).convert("RGB"), float)[m].mean(0)
    if colour in ("red", "blue"):
      assert rgb.argmax() == ("red", "green", "blue").index(colour), (image_id, rgb)
    patches = evidence.patch_mask(m, 64, 8)
    assert 0 < patches.sum() < 64


def test_attribute_tokens_are_colour_and_shape_words():
  from transformers import AutoTokenizer

  from flmoe_jax.features.encoders import minilm_path

  tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
  q = "does the image not contain a teal shape?"
  m = evidence.attribute_token_mask(tok, q, 16)
  pieces = tok.convert_ids_to_tokens(tok(q)["input_ids"])
  marked = [p for p, on in zip(pieces, m) if on]
  assert "".join(p.removeprefix("##") for p in marked) == "tealshape"
  assert not m[0] and m.shape == (16,)  # [CLS] is never evidence
  m = evidence.attribute_token_mask(tok, "what color is the circle?", 5)  # cut after "is"
  assert m.tolist() == [False, False, True, False, False]
