"""Where the evidence is, read from the raw data without labels: the pixel ground truth of easy-vqa.

An easy-vqa image is one coloured shape on a plain background, and a question names the attribute it
asks about (a colour word, a shape word, or the words `color` / `shape`). So, per example, the
positions that carry the answer are known without any model:

* **image**: the patches that contain the shape. A pixel belongs to the shape when any channel
  differs from the background colour (the median of the border pixels) by more than
  `SHAPE_TOLERANCE` (the plain backgrounds vary by at most 4 levels; shape edges are anti-aliased);
  a patch is a shape patch when at least `MIN_PATCH_FRACTION` of its pixels (on the encoder's
  S x S grid) are shape pixels.
* **text**: the tokens of the words in `ATTRIBUTE_WORDS`.

`evidence_for_store(store, split)` returns an `Evidence` for stores whose dataset has such a rule
(today: easyvqa), else None; `Evidence.masks(rows)` gives bool masks [B, T_m] per modality, aligned
with the store's positions (text: the store's tokenisation, special tokens included and never
evidence; image: the encoder's row-major patch grid). Explanations (`flmoe explain`) and probes
(`flmoe probe`) score themselves against these masks (docs/explain.md, docs/probes.md).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from flmoe_jax.errors import DatasetError

SHAPE_TOLERANCE = 16  # 0-255 levels: a pixel further than this from the background is the shape
MIN_PATCH_FRACTION = 0.1  # share of a patch's pixels on the shape for the patch to count
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
ATTRIBUTE_WORDS = frozenset(COLOURS + SHAPES + ("color", "colour", "shape"))


def shape_mask(image, tolerance: int = SHAPE_TOLERANCE) -> np.ndarray:
  """The pixels of an image that differ from its plain background.

  Args:
    image: an RGB image (path, bytes, PIL image or uint8 array [H, W, 3]).
    tolerance: largest per-channel difference (0-255) still counted as background.

  Returns:
    bool [H, W], True on the shape.
  """
  from flmoe_jax.features.encoders import load_pil

  a = np.asarray(load_pil(image), np.int16)
  border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
  background = np.median(border, axis=0)
  return np.abs(a - background).max(-1) > tolerance


def patch_mask(
  pixels: np.ndarray, image_size: int, patch_size: int, min_fraction: float = MIN_PATCH_FRACTION
) -> np.ndarray:
  """Which patches of an encoder's grid hold enough shape pixels.

  Args:
    pixels: bool [H, W] shape mask at the image's own resolution.
    image_size: S, the side the encoder resizes to (nearest-neighbour here).
    patch_size: p; the grid is (S / p) x (S / p), patches in row-major order.
    min_fraction: share of a patch's pixels that must be shape pixels.

  Returns:
    bool [(S / p)^2].
  """
  from PIL import Image

  m = np.asarray(pixels, bool)
  if m.shape != (image_size, image_size):
    m = (
      np.asarray(
        Image.fromarray(m.astype(np.uint8) * 255).resize((image_size, image_size), Image.NEAREST)
      )
      > 127
    )
  g = image_size // patch_size
  share = m[: g * patch_size, : g * patch_size].reshape(g, patch_size, g, patch_size).mean((1, 3))
  return (share >= min_fraction).reshape(-1)


def attribute_token_mask(tokenizer, question: str, max_len: int) -> np.ndarray:
  """Which tokens of a question belong to a word of `ATTRIBUTE_WORDS`.

  Args:
    tokenizer: the store's (fast) tokenizer; the question is tokenised as at extraction (special
      tokens added, cut at `max_len`).
    question: the question text.
    max_len: T, the store's text length.

  Returns:
    bool [T] (False on special tokens and padding).
  """
  enc = tokenizer(
    question,
    add_special_tokens=True,
    truncation=True,
    max_length=max_len,
    return_offsets_mapping=True,
    verbose=False,
  )
  out = np.zeros(max_len, bool)
  for t, (start, end) in enumerate(enc["offset_mapping"]):
    if end <= start:
      continue  # a special token
    # The whole word around the token (word pieces share their word's verdict).
    left = re.search(r"[A-Za-z]*$", question[:start]).group(0)
    right = re.match(r"[A-Za-z]*", question[end:]).group(0)
    out[t] = (left + question[start:end] + right).lower() in ATTRIBUTE_WORDS
  return out


@dataclasses.dataclass
class Evidence:
  """The evidence masks of one store split, computed per row on first use and cached.

  Attributes:
    rule: a one-line statement of how the masks are made (for reports).
    modalities: the store's modality names, in order.
  """

  rule: str
  modalities: tuple[str, ...]
  _examples: list  # per row: (question, image path)
  _tokenizer: Any
  _text_len: int
  _grid: tuple[int, int]  # (image_size, patch_size)
  _cache: dict = dataclasses.field(default_factory=dict)

  def _row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
    if row not in self._cache:
      question, image = self._examples[row]
      self._cache[row] = (
        attribute_token_mask(self._tokenizer, question, self._text_len),
        patch_mask(shape_mask(image), *self._grid),
      )
    return self._cache[row]

  def masks(self, rows) -> dict[str, np.ndarray]:
    """{"text": bool [B, T], "image": bool [B, P]} for the given split rows (-1: padding, False)."""
    rows = np.asarray(rows).reshape(-1)
    text = np.zeros((len(rows), self._text_len), bool)
    image = np.zeros((len(rows), (self._grid[0] // self._grid[1]) ** 2), bool)
    for i in np.flatnonzero(rows >= 0):
      text[i], image[i] = self._row(int(rows[i]))
    return {self.modalities[0]: text, self.modalities[1]: image}


def evidence_for_store(store, split: str) -> Evidence | None:
  """The evidence of a store split, or None when its dataset has no evidence rule.

  Args:
    store: an open `FeatureStore` written by `flmoe features`.
    split: the split.

  Raises:
    DatasetError: the store names easyvqa but its raw data (recorded in the manifest) cannot be
      read, or its examples are not in it.
  """
  extraction = store.manifest.get("extraction") or {}
  if extraction.get("dataset") != "easyvqa":
    return None
  from transformers import AutoTokenizer

  from flmoe_jax.data.raw import load_raw
  from flmoe_jax.features.encoders import resolve_model_path

  encoders = extraction["encoders"]
  text, image = store.modality_names
  source = (extraction.get("raw_info") or {}).get("source")
  raw = load_raw("easyvqa", _raw_dir(source))
  by_id = {ex.id: ex for part in raw.splits.values() for ex in part}
  ids = store.split(split).ids
  missing = [i for i in ids[:1000] if i not in by_id]
  if missing:
    raise DatasetError(f"easyvqa evidence: store example {missing[0]!r} is not in the raw data")
  examples = [(by_id[i].inputs[text], by_id[i].inputs[image]) for i in ids]
  tokenizer = AutoTokenizer.from_pretrained(
    resolve_model_path(encoders[text]["name"]), local_files_only=True
  )
  grid = (int(encoders[image]["image_size"]), int(encoders[image]["patch_size"]))
  rule = (
    f"image: patches with >= {MIN_PATCH_FRACTION:.0%} of their pixels off the background "
    f"(> {SHAPE_TOLERANCE}/255 in a channel); text: tokens of colour and shape words and of "
    "'color'/'shape'"
  )
  return Evidence(rule, (text, image), examples, tokenizer, store.modalities[0].max_len, grid)


def _raw_dir(source: str | None) -> str | None:
  """The raw folder recorded at extraction; None (the wheel's data) when it was the wheel's."""
  if not source:
    return None
  try:
    import easy_vqa  # noqa: PLC0415  (optional dependency)
  except ImportError:
    return source
  import pathlib

  wheel = pathlib.Path(easy_vqa.__file__).parent / "data"
  if not pathlib.Path(source).is_dir() or pathlib.Path(source).resolve() == wheel.resolve():
    return None  # the wheel's data (possibly installed elsewhere since; example ids are checked)
  return source
