"""easy-VQA reader: question text + 64x64 image, 13 answers (the `easy-vqa` 1.0 wheel, MIT licence).

The data ships inside the `easy_vqa` package (4,000 train images with 38,575 questions, 1,000 test
images with 9,673 questions), so `raw_dir` is normally `None`. A folder with the package's own
layout (`answers.txt`, `{train,test}/questions.json` holding [question, answer, image id] triples,
`{train,test}/images/<image id>.png`) can be given instead.

Splits: `test` is the package's test set. `val` is carved from the package's train set **by image**,
so that no image is shared between train and val: the sorted train image ids are shuffled with
`random.Random(seed)` and the first round(val_fraction * 4000) = 400 images (with all their
questions) form `val`. Examples keep the package's question order. Ids are `train_<i>` / `test_<i>`,
with `i` the question's index in its package file (val examples keep their `train_<i>` id). Labels
index `answers.txt` (the package's `get_answers()` order). `limit_per_split` keeps the first N of
each split.
"""

from __future__ import annotations

import os
import pathlib
import random

from flmoe_jax.data.raw import base
from flmoe_jax.data.store import TaskSpec
from flmoe_jax.errors import DatasetError

NAME = "easyvqa"
MODALITIES = (base.RawModality("text", "text"), base.RawModality("image", "image"))
VAL_FRACTION = 0.1
SEED = 0


def _from_package():
  try:
    import easy_vqa  # noqa: PLC0415  (optional dependency)
  except ImportError:
    raise DatasetError(
      f"{NAME}: the easy-vqa package is not installed (pip install easy-vqa); no folder was given"
    ) from None
  return (
    easy_vqa.get_answers(),
    {"train": easy_vqa.get_train_questions(), "test": easy_vqa.get_test_questions()},
    {"train": easy_vqa.get_train_image_paths(), "test": easy_vqa.get_test_image_paths()},
    str(pathlib.Path(easy_vqa.__file__).parent / "data"),
  )


def _from_folder(raw_dir):
  root = base.require_dir(raw_dir, NAME)
  text = base.read_text(root / "answers.txt", NAME, "one answer a line")
  answers = [a.strip() for a in text.splitlines() if a.strip()]
  questions, images = {}, {}
  for split in ("train", "test"):
    qs = base.read_json(root / split / "questions.json", NAME)
    if not isinstance(qs, list) or not all(isinstance(q, list) and len(q) == 3 for q in qs):
      raise DatasetError(
        f"{NAME}: {root / split / 'questions.json'} must be a list of [q, a, image id]"
      )
    questions[split] = ([q[0] for q in qs], [q[1] for q in qs], [q[2] for q in qs])
    img_dir = root / split / "images"
    if not img_dir.is_dir():
      raise DatasetError(f"{NAME}: folder {img_dir} is missing")
    images[split] = {int(p.stem): str(p) for p in img_dir.glob("*.png") if p.stem.isdigit()}
  return answers, questions, images, str(root)


@base.register(NAME)
def load_easyvqa(
  raw_dir: str | os.PathLike | None = None,
  *,
  on_error: str = "fail",
  val_fraction: float = VAL_FRACTION,
  seed: int = SEED,
  limit_per_split: int | None = None,
  verify_images: bool = False,
) -> base.RawDataset:
  """Reads easy-VQA from the installed `easy_vqa` package (or a folder with its layout).

  Args:
    raw_dir: `None` (the package data) or a folder with the package's data layout.
    on_error: `fail` (default) raises `DatasetError` on questions with a missing image or an unknown
      answer; `skip` leaves them out and records them.
    val_fraction: share of the train images (with their questions) carved out as `val`.
    seed: seed of the `random.Random` shuffle that picks the val images.
    limit_per_split: keep only the first N examples of each split (demos, tests).
    verify_images: also open every image with PIL (`base.verify_images`).

  Returns:
    The dataset: modalities text + image, multiclass over the 13 answers, splits train/val/test.
  """
  base.check_on_error(on_error)
  if not 0.0 <= val_fraction < 1.0:
    raise DatasetError(f"{NAME}: val_fraction={val_fraction} must be in [0, 1)")
  if limit_per_split is not None and int(limit_per_split) < 1:
    raise DatasetError(f"{NAME}: limit_per_split={limit_per_split} must be positive")
  if raw_dir is None:
    answers, questions, images, source = _from_package()
  else:
    answers, questions, images, source = _from_folder(raw_dir)
  answer_index = {a: i for i, a in enumerate(answers)}

  train_images = sorted(images["train"])
  random.Random(seed).shuffle(train_images)
  val_images = set(train_images[: int(round(val_fraction * len(train_images)))])

  problems = base.Problems(NAME, source)
  splits: dict[str, list[base.RawExample]] = {"train": [], "val": [], "test": []}
  for pkg_split in ("train", "test"):
    texts, answer_list, image_ids = questions[pkg_split]
    for i, (text, answer, image_id) in enumerate(zip(texts, answer_list, image_ids, strict=True)):
      eid = f"{pkg_split}_{i}"
      split = "val" if pkg_split == "train" and image_id in val_images else pkg_split
      path = images[pkg_split].get(image_id)
      if path is None:
        problems.add(eid, f"[{split}] image {image_id} of {pkg_split} is missing")
        continue
      if answer not in answer_index:
        problems.add(eid, f"[{split}] answer {answer!r} is not in answers.txt")
        continue
      example = base.RawExample(
        id=eid, inputs={"text": text, "image": path}, label=answer_index[answer]
      )
      splits[split].append(example)
  if limit_per_split is not None:
    splits = {s: v[: int(limit_per_split)] for s, v in splits.items()}

  ds = base.RawDataset(
    name=NAME,
    modalities=MODALITIES,
    task=TaskSpec(type="multiclass", num_classes=len(answers), class_names=tuple(answers)),
    splits=splits,
    info={
      "reader": NAME,
      "source": source,
      "val_rule": f"val = {len(val_images)} train images picked by random.Random({seed}).shuffle",
      "limit_per_split": limit_per_split,
    },
  )
  problems.resolve(on_error, ds.skipped)
  if verify_images:
    base.verify_images(ds, on_error)
  return ds
