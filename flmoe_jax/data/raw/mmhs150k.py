"""MMHS150K reader: tweet text + tweet image, binary hate speech (Gomez et al., WACV 2020).

Expected layout under `raw_dir` (the authors' archive, extracted):

```
<raw_dir>/MMHS150K_GT.json        {tweet_id: {"tweet_text", "labels": [3 ints 0-5], "img_url", ...}}
<raw_dir>/img_resized/<id>.jpg    the tweet image
<raw_dir>/img_txt/<id>.json       optional, only for some tweets: {"img_text": OCR text}
<raw_dir>/splits/train_ids.txt    one tweet id a line (134,823)
<raw_dir>/splits/val_ids.txt      (5,000)
<raw_dir>/splits/test_ids.txt     (10,000)
```

Label rule (the authors' split code, `set_data_MMHS.py`): each of the 3 annotators gives a class 0-5
(0 = not hate); the tweet is **hate (1) if at least 2 of the 3 annotators gave a non-zero class**,
i.e. more than half of the votes are hate, else not hate (0). The 3 votes are kept in
`RawExample.meta["votes"]` so that soft or 6-class labels stay possible; the OCR text is in
`meta["img_text"]` (None when there is no OCR file or its text is empty).

Text = `tweet_text`; `append_ocr=True` appends the image's OCR text after a space; `strip_urls=True`
removes `http(s)://...` links first (common preprocessing; off by default).
"""

from __future__ import annotations

import json
import os
import pathlib
import re

from flmoe_jax.data.raw import base
from flmoe_jax.data.store import TaskSpec
from flmoe_jax.errors import DatasetError

NAME = "mmhs150k"
SPLIT_FILES = {"train": "train_ids.txt", "val": "val_ids.txt", "test": "test_ids.txt"}
VOTE_NAMES = ("NotHate", "Racist", "Sexist", "Homophobe", "Religion", "OtherHate")
MODALITIES = (base.RawModality("text", "text"), base.RawModality("image", "image"))
TASK = TaskSpec(type="binary", num_classes=2, class_names=("not_hate", "hate"))
_URL = re.compile(r"https?://\S+")


def hate_label(votes) -> int:
  """1 if more than half of the votes are a hate class (> 0): with 3 votes, at least 2; else 0."""
  return int(2 * sum(int(v) > 0 for v in votes) > len(votes))


def tweet_text(text: str, img_text: str | None, *, append_ocr: bool, strip_urls: bool) -> str:
  """The model's text input: the tweet, optionally without links and with the OCR text appended."""
  out = _URL.sub(" ", text) if strip_urls else text
  out = " ".join(out.split()) if strip_urls else out.strip()
  if append_ocr and img_text and img_text.strip():
    out = f"{out} {img_text.strip()}" if out else img_text.strip()
  return out


def _read_ids(path: pathlib.Path) -> list[str]:
  text = base.read_text(path, NAME, "one tweet id a line")
  return [line.strip() for line in text.splitlines() if line.strip()]


def _read_ocr(path: pathlib.Path):
  """The OCR text; None when there is no file; a 1-tuple holding the reason when it is malformed."""
  if not path.is_file():
    return None
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    return (f"OCR file {path} is not valid JSON ({base.one_line(e)})",)
  if not isinstance(data, dict) or not isinstance(data.get("img_text", ""), str):
    return (f"OCR file {path} has no 'img_text' string",)
  return data.get("img_text", "")


def _check_entry(entry) -> str | None:
  if not isinstance(entry, dict):
    return "ground-truth entry is not an object"
  if not isinstance(entry.get("tweet_text"), str):
    return "ground-truth entry has no 'tweet_text' string"
  votes = entry.get("labels")
  if (
    not isinstance(votes, list)
    or len(votes) != 3
    or not all(isinstance(v, int) and 0 <= v < len(VOTE_NAMES) for v in votes)
  ):
    return f"ground-truth 'labels' must be 3 ints in 0-5, got {votes!r}"
  return None


@base.register(NAME)
def load_mmhs150k(
  raw_dir: str | os.PathLike,
  *,
  on_error: str = "fail",
  append_ocr: bool = False,
  strip_urls: bool = False,
  verify_images: bool = False,
) -> base.RawDataset:
  """Reads MMHS150K from its hand-downloaded folder.

  Args:
    raw_dir: the folder holding `MMHS150K_GT.json`, `img_resized/`, `img_txt/` and `splits/`.
    on_error: `fail` (default) raises `DatasetError` on bad tweets (id not in the ground truth, bad
      votes, missing image, malformed OCR file when `append_ocr`); `skip` leaves them out and
      records them.
    append_ocr: append the image's OCR text (`img_txt/<id>.json`) to the tweet text.
    strip_urls: remove `http(s)://` links from the tweet text.
    verify_images: also open every image with PIL (`base.verify_images`).

  Returns:
    The dataset: modalities text + image, binary (not_hate, hate), splits train/val/test.
  """
  base.check_on_error(on_error)
  root = base.require_dir(raw_dir, NAME)
  gt_path = root / "MMHS150K_GT.json"
  gt = base.read_json(gt_path, NAME)
  if not isinstance(gt, dict):
    raise DatasetError(f"{NAME}: {gt_path} must map tweet ids to entries")
  split_ids = {s: _read_ids(root / "splits" / f) for s, f in SPLIT_FILES.items()}
  repeat = base.first_repeated_id(split_ids)
  if repeat:
    tid, first, again = repeat
    raise DatasetError(f"{NAME}: tweet id {tid} is listed twice in splits/ ({first}, {again})")

  def read_tweet(tid: str) -> base.RawExample | str:
    entry = gt.get(tid)
    if entry is None:
      return f"id not in {gt_path.name}"
    reason = _check_entry(entry)
    if reason:
      return reason
    image = root / "img_resized" / f"{tid}.jpg"
    if not image.is_file():
      return f"image file {image} is missing"
    ocr = _read_ocr(root / "img_txt" / f"{tid}.json")
    if isinstance(ocr, tuple):
      if append_ocr:
        return ocr[0]
      ocr = None
    ocr = ocr if ocr and ocr.strip() else None  # an empty OCR text counts as none
    text = tweet_text(entry["tweet_text"], ocr, append_ocr=append_ocr, strip_urls=strip_urls)
    votes = [int(v) for v in entry["labels"]]
    return base.RawExample(
      id=tid,
      inputs={"text": text, "image": str(image)},
      label=hate_label(votes),
      meta={"votes": votes, "img_text": ocr},
    )

  problems = base.Problems(NAME, str(root))
  splits = base.read_examples(split_ids, read_tweet, problems)
  n_ocr = sum(ex.meta["img_text"] is not None for examples in splits.values() for ex in examples)

  ds = base.RawDataset(
    name=NAME,
    modalities=MODALITIES,
    task=TASK,
    splits=splits,
    info={
      "reader": NAME,
      "layout": "MMHS150K_GT.json + img_resized/<id>.jpg + img_txt/<id>.json + splits/*_ids.txt",
      "label_rule": "hate if >= 2 of 3 annotator votes are > 0",
      "append_ocr": append_ocr,
      "strip_urls": strip_urls,
      "with_ocr_text": n_ocr,
      "listed": {s: len(v) for s, v in split_ids.items()},
    },
  )
  problems.resolve(on_error, ds.skipped)
  if verify_images:
    base.verify_images(ds, on_error)
  return ds
