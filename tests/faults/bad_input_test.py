"""Bad input to every `flmoe` command: one line `flmoe: error: ...`, exit status 2, nothing written.

Each case of `CASES` runs `flmoe_jax.cli.main(argv)` in-process, with the working directory set to a
fresh sandbox that holds copies of the session's fixtures:

  store/       a small random feature store (train/val/test: 64/32/32 rows)
  run/         a tiny FL-I2MoE trained on it (configs/tiny.py); its config names the store as the
               relative path `store`, so inside a sandbox the sandbox's copy is the one it reads
  reference/   a random FL-I2MoE in the authors' PyTorch layout (model.npz, encoders.npz)

A case's `setup(sandbox)` adds or changes files before the snapshot; argv entries may hold the
placeholder `{sandbox}` (or paths relative to it, the working directory). The check: exit status 2,
stderr exactly one non-empty line `flmoe: error: <message>` that contains the case's expected
substring(s), no log record of level WARNING or above and no shown Python warning (outside pytest
those reach stderr too), and the sandbox unchanged (every folder, and every file's size and sha256).

The cases in `REAL_PROCESS` run a second time as a real `python -m flmoe_jax` process, whose stderr
must be the same single line.

A case whose `argv` is a callable is an API case, for code without a command (the converter): it is
called with the sandbox and must raise a `FlmoeError`, whose message is printed as the CLI prints it
and checked the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from conftest import fill_random, make_random_store

from flmoe_jax import cli
from flmoe_jax.errors import FlmoeError

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPLIT_ROWS = (64, 32, 32)  # train / val / test rows of the session store
REF_NAMES = ("text", "image")  # modalities of the reference-layout model


@dataclasses.dataclass(frozen=True)
class Case:
  """One bad input.

  Attributes:
    id: the pytest id.
    argv: `flmoe` arguments (entries may hold `{sandbox}`), or a callable(sandbox) for API cases.
    expect: substring(s) the error line must contain (what names the problem).
    setup: callable(sandbox) run before the snapshot, to add the files the case needs.
  """

  id: str
  argv: Sequence[str] | Callable[[pathlib.Path], object]
  expect: str | tuple[str, ...]
  setup: Callable[[pathlib.Path], None] | None = None


# --------------------------------------------------------------------------------------------------
# Setup helpers (each returns a callable(sandbox)).
# --------------------------------------------------------------------------------------------------


def _write(rel: str, data: bytes = b"not what you think\n") -> Callable[[pathlib.Path], None]:
  def setup(sandbox: pathlib.Path) -> None:
    path = sandbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

  return setup


def _mkdir(rel: str) -> Callable[[pathlib.Path], None]:
  def setup(sandbox: pathlib.Path) -> None:
    (sandbox / rel).mkdir(parents=True)

  return setup


def _store(rel: str, n: tuple[int, int, int]) -> Callable[[pathlib.Path], None]:
  """A random store at `rel` (replacing what is there) with the given split sizes."""

  def setup(sandbox: pathlib.Path) -> None:
    shutil.rmtree(sandbox / rel, ignore_errors=True)
    make_random_store(sandbox / rel, n=n)

  return setup


def _image(path: pathlib.Path, seed: int) -> None:
  from PIL import Image

  rng = np.random.default_rng(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 256, (10, 6, 3), dtype=np.uint8)).save(path)


ENRICO_ROWS = (("10001", "list"), ("10002", "login"), ("10003", "list"), ("10004", "menu"))


def _enrico(*, csv: bytes | None = None, bad_image: str | None = None):
  """An ENRICO folder at `raw/` (design_topics.csv, screenshots/, wireframes/)."""

  def setup(sandbox: pathlib.Path) -> None:
    root = sandbox / "raw"
    root.mkdir()
    lines = "screen_id,topic\n" + "".join(f"{sid},{topic}\n" for sid, topic in ENRICO_ROWS)
    (root / "design_topics.csv").write_bytes(csv if csv is not None else lines.encode())
    for i, (sid, _) in enumerate(ENRICO_ROWS):
      _image(root / "screenshots" / f"{sid}.jpg", i)
      _image(root / "wireframes" / f"{sid}.png", 10 + i)
    if bad_image:
      (root / "screenshots" / f"{bad_image}.jpg").write_bytes(os.urandom(256))

  return setup


def _mmhs_latin1_ids(sandbox: pathlib.Path) -> None:
  """An MMHS150K folder at `raw/` whose splits/val_ids.txt holds a Latin-1 byte."""
  root = sandbox / "raw"
  (root / "splits").mkdir(parents=True)
  (root / "MMHS150K_GT.json").write_text("{}")
  (root / "splits" / "train_ids.txt").write_text("101\n102\n")
  (root / "splits" / "val_ids.txt").write_bytes(b"103\n10\xe94\n")
  (root / "splits" / "test_ids.txt").write_text("105\n")


def _edit_reference(edit: Callable[[dict], None]) -> Callable[[pathlib.Path], None]:
  """Rewrites reference/model.npz after `edit(state_dict)`."""

  def setup(sandbox: pathlib.Path) -> None:
    path = sandbox / "reference" / "model.npz"
    with np.load(path) as z:
      sd = dict(z)
    edit(sd)
    np.savez(path, **sd)

  return setup


def _truncate(rel: str) -> Callable[[pathlib.Path], None]:
  def setup(sandbox: pathlib.Path) -> None:
    path = sandbox / rel
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

  return setup


def _convert(sandbox: pathlib.Path) -> None:
  """The converter's public entry point on the sandbox's reference files."""
  from flmoe_jax import convert

  ref = sandbox / "reference"
  convert.from_reference_state_dict(ref / "model.npz", ref / "encoders.npz", REF_NAMES, num_heads=2)


_BIAS = "interaction_experts.1.fusion_model.network.0.attn.proj.bias"


def _bias_wrong_shape(sd: dict) -> None:
  sd[_BIAS] = np.zeros(3, np.float32)


def _bias_strings(sd: dict) -> None:
  sd[_BIAS] = np.array(["0.1"] * sd[_BIAS].shape[0])


def _drop_bias(sd: dict) -> None:
  del sd[_BIAS]


def _extra_key(sd: dict) -> None:
  sd["classifier.weight"] = np.zeros((2, 2), np.float32)


# --------------------------------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------------------------------

PROBE = ("probe", "--workdir", "run", "--no-figures")
EXPLAIN = ("explain", "--workdir", "run", "--no-figures")
FEATURES = ("features", "--dataset", "enrico", "--raw", "raw", "--out", "out", "--no-progress")

CASES: list[Case] = [
  # flmoe report
  Case(
    "report-baseline-missing",
    ["report", "--workdir", "run", "--baseline", "runs/nope"],
    ("baseline", "runs/nope", "does not exist"),
  ),
  Case(
    "report-baseline-is-file",
    ["report", "--workdir", "run", "--baseline", "dense.txt"],
    ("dense.txt", "is a file"),
    _write("dense.txt"),
  ),
  Case(
    "report-baseline-unfinished",
    ["report", "--workdir", "run", "--baseline", "dense"],
    ("dense", "no summary.json"),
    _mkdir("dense"),
  ),
  Case("report-workdir-missing", ["report", "--workdir", "nope"], ("nope", "does not exist")),
  Case(
    "report-out-is-file",
    ["report", "--workdir", "run", "--out", "{sandbox}/store/manifest.json"],
    ("manifest.json", "is a file"),
  ),
  # flmoe probe
  Case(
    "probe-samples-above-split",
    [*PROBE, "--samples", "1000"],
    ("--samples 1000", f"only {SPLIT_ROWS[2]} examples"),
  ),
  Case("probe-samples-zero", [*PROBE, "--samples", "0"], "--samples must be an int >= 1"),
  Case("probe-samples-negative", [*PROBE, "--samples", "-5"], "--samples must be an int >= 1"),
  Case("probe-k-zero", [*PROBE, "--k", "0"], "--k must be an int >= 1"),
  Case("probe-draws-zero", [*PROBE, "--draws", "0"], "--draws must be an int >= 1"),
  Case("probe-references-zero", [*PROBE, "--references", "0"], "--references must be an int >= 1"),
  Case("probe-repeats-zero", [*PROBE, "--repeats", "0"], "--repeats must be an int >= 1"),
  Case("probe-budget-zero", [*PROBE, "--budget", "0"], "--budget must be an int >= 1"),
  Case("probe-budget-too-small", [*PROBE, "--budget", "10"], "budget 10 is too small"),
  Case("probe-mask-budgets-text", [*PROBE, "--mask-budgets", "x"], ("--mask-budgets", "'x'")),
  Case("probe-mask-budgets-zero", [*PROBE, "--mask-budgets", "0"], ("--mask-budgets", "[0]")),
  Case("probe-mask-budgets-negative", [*PROBE, "--mask-budgets=-1"], ("--mask-budgets", "[-1]")),
  Case("probe-mask-budgets-empty", [*PROBE, "--mask-budgets", ","], ("--mask-budgets", "[]")),
  Case(
    "probe-n-random-pairs-zero",
    [*PROBE, "--pairs", "random", "--n-random-pairs", "0"],
    "--n-random-pairs must be an int >= 1",
  ),
  Case("probe-seed-negative", [*PROBE, "--seed", "-1"], "--seed must be an int >= 0"),
  Case("probe-split-unknown", [*PROBE, "--split", "nosuch"], "no split 'nosuch'"),
  Case(
    "probe-split-empty",
    [*PROBE, "--split", "test"],
    ("test split has no examples", "--split"),
    _store("store", (SPLIT_ROWS[0], SPLIT_ROWS[1], 0)),
  ),
  Case("probe-run-seed-untrained", [*PROBE, "--run-seed", "7"], ("seed 7", "finished seeds: [0]")),
  Case("probe-workdir-missing", ["probe", "--workdir", "nope"], ("nope", "does not exist")),
  Case(
    "probe-workdir-is-file",
    ["probe", "--workdir", "store/manifest.json"],
    ("store/manifest.json", "is a file"),
  ),
  Case(
    "probe-workdir-not-a-run",
    ["probe", "--workdir", "store"],
    ("store is not a run directory", "config.json"),
  ),
  Case("probe-standout-min-rate", [*PROBE, "--standout-min-rate", "2"], "--standout-min-rate"),
  Case("probe-min-effect-negative", [*PROBE, "--min-effect", "-1"], "--min-effect"),
  Case("probe-min-effect-nan", [*PROBE, "--min-effect", "nan"], "--min-effect"),
  Case(
    "probe-max-coalitions-zero",
    [*PROBE, "--max-coalitions-per-call", "0"],
    "cannot fit one coalition",
  ),
  Case("probe-tag-bad", [*PROBE, "--tag", "a b"], "--tag 'a b'"),
  Case("probe-sii-expert-unknown", [*PROBE, "--sii-expert", "bogus"], "--sii-expert 'bogus'"),
  Case("probe-attention-unknown", [*PROBE, "--attention", "flash"], "invalid choice: 'flash'"),
  Case("probe-samples-not-int", [*PROBE, "--samples", "many"], "invalid int value: 'many'"),
  # flmoe explain
  Case(
    "explain-samples-above-split",
    [*EXPLAIN, "--samples", "1000"],
    ("--samples 1000", f"only {SPLIT_ROWS[1]} examples"),
  ),
  Case("explain-samples-zero", [*EXPLAIN, "--samples", "0"], "--samples must be an int >= 1"),
  Case("explain-batch-size-zero", [*EXPLAIN, "--batch-size", "0"], "--batch-size must be"),
  Case(
    "explain-steps-per-call-negative",
    [*EXPLAIN, "--steps-per-call", "-1"],
    "--steps-per-call must be an int >= 0, got -1",
  ),
  Case("explain-repeats-zero", [*EXPLAIN, "--repeats", "0"], "--repeats must be an int >= 1"),
  Case(
    "explain-ig-steps-zero",
    [*EXPLAIN, "--method", "ig", "--ig-steps", "0"],
    "--ig-steps must be an int >= 1",
  ),
  Case("explain-ks-zero", [*EXPLAIN, "--ks", "0"], "K must be in (0, 100]"),
  Case("explain-ks-150", [*EXPLAIN, "--ks", "150"], "K must be in (0, 100]"),
  Case("explain-ks-text", [*EXPLAIN, "--ks", "abc"], ("--ks", "'abc'")),
  Case("explain-ks-repeated", [*EXPLAIN, "--ks", "5,5"], "repeated K"),
  Case("explain-seeds-text", [*EXPLAIN, "--seeds", "x"], ("--seeds", "'x'")),
  Case("explain-seeds-untrained", [*EXPLAIN, "--seeds", "7"], ("seed(s) [7]", "finished: [0]")),
  Case("explain-split-unknown", [*EXPLAIN, "--split", "nosuch"], "no split 'nosuch'"),
  Case(
    "explain-split-empty",
    [*EXPLAIN, "--split", "val"],
    "val split has no examples",
    _store("store", (SPLIT_ROWS[0], 0, SPLIT_ROWS[2])),
  ),
  Case("explain-workdir-missing", ["explain", "--workdir", "nope"], ("nope", "does not exist")),
  Case(
    "explain-workdir-is-file",
    ["explain", "--workdir", "store/manifest.json"],
    ("store/manifest.json", "is a file"),
  ),
  Case(
    "explain-baseline-missing",
    [*EXPLAIN, "--baseline", "runs/dense"],
    ("runs/dense", "does not exist"),
  ),
  # flmoe info
  Case(
    "info-empty-split",
    ["info", "empty"],
    ("split 'val' has 0 examples", "empty"),
    _store("empty", (16, 0, 8)),
  ),
  Case("info-missing", ["info", "nope"], ("nope", "no feature store")),
  Case("info-not-a-folder", ["info", "store/manifest.json"], "store/manifest.json"),
  Case(
    "info-manifest-not-json",
    ["info", "store"],
    ("store/manifest.json", "not valid JSON"),
    _write("store/manifest.json", b"{"),
  ),
  Case(
    "info-truncated-array",
    ["info", "store"],
    ("store/val/text.npy", "unreadable"),
    _truncate("store/val/text.npy"),
  ),
  # flmoe synth
  Case(
    "synth-dim-too-small",
    ["synth", "--out", "s", "--set", "dim=2"],
    ("dim 2 is too small", "dim must be >= 8"),
  ),
  Case(
    "synth-unknown-option",
    ["synth", "--out", "s", "--set", "bogus=1"],
    ("--set bogus", "no such generator option"),
  ),
  Case("synth-no-value", ["synth", "--out", "s", "--set", "dim"], ("KEY=VALUE", "'dim'")),
  Case(
    "synth-negative-count",
    ["synth", "--out", "s", "--set", "n_train=-5"],
    "n_train must be >= 0, got -5",
  ),
  Case(
    "synth-not-a-number",
    ["synth", "--out", "s", "--set", "n_train=abc"],
    "n_train must be an integer, got 'abc'",
  ),
  Case(
    "synth-float-for-int",
    ["synth", "--out", "s", "--set", "n_test=1.5"],
    "n_test must be an integer, got 1.5",
  ),
  Case(
    "synth-nan-amplitude",
    ["synth", "--out", "s", "--set", "amplitude=NaN"],
    "amplitude must be a finite number",
  ),
  Case(
    "synth-bad-bool",
    ["synth", "--out", "s", "--set", "include_unique=maybe"],
    "include_unique must be true or false, got 'maybe'",
  ),
  Case(
    "synth-unknown-setting",
    ["synth", "--out", "s", "--set", "setting=nosuch"],
    "setting 'nosuch' not in",
  ),
  Case(
    "synth-image-len-not-square",
    ["synth", "--out", "s", "--set", "image_len=5"],
    "image_len 5 must be a perfect square",
  ),
  Case(
    "synth-too-many-distractors",
    ["synth", "--out", "s", "--set", "n_distractors=20"],
    ("text positions", "min_text_len must be >="),
  ),
  Case(
    "synth-empty-split",
    ["synth", "--out", "s", "--set", "n_val=0"],
    ("empty val split", "n_val >= 1"),
  ),
  Case("synth-seed-negative", ["synth", "--out", "s", "--seed=-1"], "seed must be >= 0"),
  Case("synth-out-is-file", ["synth", "--out", "notes.txt"], "notes.txt", _write("notes.txt")),
  Case(
    "synth-out-is-other-folder",
    ["synth", "--out", "docs"],
    "docs",
    _write("docs/readme.txt"),
  ),
  # flmoe features
  Case(
    "features-raw-missing",
    ["features", "--dataset", "enrico", "--raw", "nope", "--out", "out"],
    ("raw folder nope", "does not exist"),
  ),
  Case(
    "features-dataset-unknown",
    ["features", "--dataset", "nosuch", "--raw", "raw", "--out", "out"],
    ("unknown dataset 'nosuch'", "enrico"),
    _enrico(),
  ),
  Case(
    "features-image-not-an-image",
    list(FEATURES),
    ("raw/screenshots/10002.jpg", "cannot be read"),
    _enrico(bad_image="10002"),
  ),
  Case(
    "features-csv-not-utf8",
    list(FEATURES),
    ("raw/design_topics.csv", "not UTF-8"),
    _enrico(csv=b"screen_id,topic\n10001,caf\xe9\n10002,list\n"),
  ),
  Case(
    "features-ids-not-utf8",
    ["features", "--dataset", "mmhs150k", "--raw", "raw", "--out", "out", "--no-progress"],
    ("raw/splits/val_ids.txt", "not UTF-8"),
    _mmhs_latin1_ids,
  ),
  Case("features-no-out", ["features", "--dataset", "enrico", "--raw", "raw"], "--out"),
  Case(
    "features-batch-size-zero",
    [*FEATURES, "--batch-size", "0"],
    "--batch-size must be an int >= 1",
    _enrico(),
  ),
  Case("features-max-len-zero", [*FEATURES, "--max-len", "0"], "--max-len must be", _enrico()),
  Case(
    "features-out-is-file",
    ["features", "--dataset", "enrico", "--raw", "raw", "--out", "run/config.json"],
    ("run/config.json", "not a feature store"),
    _enrico(),
  ),
  Case(
    "features-out-inside-file",
    ["features", "--dataset", "enrico", "--raw", "raw", "--out", "run/config.json/store"],
    ("run/config.json", "is a file"),
    _enrico(),
  ),
  # The converter (no command: its public function, API cases).
  Case(
    "convert-bias-wrong-shape",
    _convert,
    (_BIAS, "has shape (3,)", "needs (8,)"),
    _edit_reference(_bias_wrong_shape),
  ),
  Case(
    "convert-string-array",
    _convert,
    (_BIAS, "not numbers"),
    _edit_reference(_bias_strings),
  ),
  Case(
    "convert-truncated-npz",
    _convert,
    ("reference/model.npz", "not a readable .npz", "truncated"),
    _truncate("reference/model.npz"),
  ),
  Case(
    "convert-missing-file",
    _convert,
    ("reference/model.npz", "does not exist"),
    lambda sandbox: (sandbox / "reference" / "model.npz").unlink(),
  ),
  Case("convert-missing-key", _convert, ("no key", _BIAS), _edit_reference(_drop_bias)),
  Case(
    "convert-unexpected-key",
    _convert,
    ("unexpected keys", "classifier.weight"),
    _edit_reference(_extra_key),
  ),
]


# flmoe train: configs are validated (types and ranges) and the store, mesh and workdir checked
# before anything is written.
TINY = str(ROOT / "configs" / "tiny.py")
TRAIN = ("train", "--config", TINY, "--workdir", "new", "--config.store=store")


def _wider_store(sandbox: pathlib.Path) -> None:
  """The run's store rebuilt at the same path with another feature width."""
  shutil.rmtree(sandbox / "store")
  make_random_store(sandbox / "store", n=SPLIT_ROWS, dim=12)


def _with_notes(rel: str) -> Callable[[pathlib.Path], None]:
  def setup(sandbox: pathlib.Path) -> None:
    (sandbox / rel).mkdir()
    (sandbox / rel / "notes.txt").write_text("mine")

  return setup


def _must(key: str, value: str, want: str) -> str:
  return f"config key {key!r} is {value}; it must be {want}"


CASES += [
  Case(
    "train-batch-size-zero",
    [*TRAIN, "--config.train.batch_size=0"],
    _must("train.batch_size", "0", "an integer >= 1"),
  ),
  Case(
    "train-batch-size-negative",
    [*TRAIN, "--config.train.batch_size=-16"],
    _must("train.batch_size", "-16", "an integer >= 1"),
  ),
  Case(
    "train-epochs-zero",
    [*TRAIN, "--config.train.epochs=0"],
    _must("train.epochs", "0", "an integer >= 1"),
  ),
  Case(
    "train-epochs-negative",
    [*TRAIN, "--config.train.epochs=-2"],
    _must("train.epochs", "-2", "an integer >= 1"),
  ),
  Case("train-dropout-one", [*TRAIN, "--config.model.dropout=1.0"], "'model.dropout' is 1.0"),
  Case(
    "train-learning-rate-zero", [*TRAIN, "--config.optim.learning_rate=0"], "optim.learning_rate"
  ),
  Case("train-seeds-empty", [*TRAIN, "--config.train.seeds=()"], "'train.seeds' is ()"),
  Case("train-seeds-repeated", [*TRAIN, "--config.train.seeds=(0,0)"], "distinct integers"),
  Case(
    "train-selection-metric", [*TRAIN, "--config.train.selection_metric=f2"], "selection_metric"
  ),
  Case("train-attention-unknown", [*TRAIN, "--config.model.attention=flash"], "'model.attention'"),
  Case("train-position-unknown", [*TRAIN, "--config.model.position=rope"], "'model.position'"),
  Case(
    "train-red-alone-negative",
    [*TRAIN, "--config.loss.lambda_red_alone=-1"],
    "'loss.lambda_red_alone' is -1",
  ),
  Case(
    "train-heads-divide", [*TRAIN, "--config.model.num_heads=3"], "not divisible by model.num_heads"
  ),
  Case("train-epochs-not-int", [*TRAIN, "--config.train.epochs=abc"], "cannot parse 'abc'"),
  Case("train-unknown-key", [*TRAIN, "--config.train.epoch=3"], "unknown config key 'train.epoch'"),
  Case(
    "train-config-arg-unknown",
    ["train", "--config", f"{TINY}:nonexistent_arg", "--workdir", "new", "--config.store=store"],
    "unknown config argument 'nonexistent_arg'; this config takes dense",
  ),
  Case(
    "train-config-args-exclusive",
    ["train", "--config", f"{ROOT / 'configs' / 'synthetic.py'}:synergy,null", "--workdir", "new"],
    "exclude each other",
  ),
  Case(
    "train-config-missing",
    ["train", "--config", "nope.py", "--workdir", "new"],
    "nope.py not found",
  ),
  Case(
    "train-store-named-missing",
    ["train", "--config", TINY, "--workdir", "new", "--config.store=stroe"],
    ("no feature store at stroe", "flmoe synth --out stroe"),
  ),
  Case(
    "train-store-is-file",
    ["train", "--config", TINY, "--workdir", "new", "--config.store=feats"],
    "feats",
    _write("feats"),
  ),
  Case(
    "train-store-other-folder",
    ["train", "--config", TINY, "--workdir", "new", "--config.store=mine"],
    "no feature store at mine",
    _with_notes("mine"),
  ),
  Case(
    "train-val-split-empty",
    ["train", "--config", TINY, "--workdir", "new", "--config.store=empty"],
    "the 'val' split is empty",
    _store("empty", (64, 0, 32)),
  ),
  Case(
    "train-test-split-empty",
    ["train", "--config", TINY, "--workdir", "new", "--config.store=empty"],
    "the 'test' split is empty",
    _store("empty", (64, 32, 0)),
  ),
  Case("train-batch-exceeds-split", [*TRAIN, "--config.train.batch_size=128"], "exceeds the 64"),
  Case("train-batch-mesh", [*TRAIN, "--config.train.batch_size=12"], "8-way data axis"),
  Case(
    "train-vmap-seeds-rbg",
    [*TRAIN, "--config.train.vmap_seeds=true", "--config.train.prng_impl=rbg"],
    "train.vmap_seeds needs train.prng_impl='threefry2x32'",
  ),
  Case(
    "train-expert-mesh",
    [*TRAIN, "--config.mesh.shape=(1,8)"],
    "the 8-way expert axis of the mesh does not divide the model's 4 experts; use an expert axis of 1, 2, 4",
  ),
  Case(
    "train-distributed-mode",
    [*TRAIN, "--config.distributed.initialize=sometimes"],
    "config key 'distributed.initialize' is 'sometimes'; it must be 'auto', 'on' or 'off'",
  ),
  Case(
    "train-distributed-process-id",
    [*TRAIN, "--config.distributed.num_processes=2", "--config.distributed.process_id=2"],
    "distributed.process_id 2 is not below distributed.num_processes 2",
  ),
  Case(
    # In this process JAX already runs (the runtime must start first); in a fresh one, with no
    # coordinator anywhere, JAX says "coordinator_address should be defined" in the same line.
    "train-distributed-cannot-start",
    [*TRAIN, "--config.distributed.initialize=on"],
    "the distributed runtime did not start (jax.distributed.initialize() must be called before",
  ),
  Case(
    "train-workdir-is-file",
    ["train", "--config", TINY, "--workdir", "wd", "--config.store=store"],
    "--workdir wd is a file",
    _write("wd"),
  ),
  Case(
    "train-workdir-under-file",
    ["train", "--config", TINY, "--workdir", "wd/run", "--config.store=store"],
    "cannot create --workdir wd/run",
    _write("wd"),
  ),
  Case(
    "train-workdir-other-files",
    ["train", "--config", TINY, "--workdir", "mine", "--config.store=store"],
    "holds no run",
    _with_notes("mine"),
  ),
  Case(
    "train-other-config-same-workdir",
    [
      "train",
      "--config",
      TINY,
      "--workdir",
      "run",
      "--config.store=store",
      "--config.train.epochs=5",
    ],
    "different config (train.epochs: 2 there, 5 here)",
  ),
  Case(
    "train-store-changed-since-training",
    ["train", "--config", TINY, "--workdir", "run", "--config.store=store"],
    ("another store", "'dim': 12"),
    _wider_store,
  ),
]

_IDS = [c.id for c in CASES]
# Cases that also run as `python -m flmoe_jax` in a subprocess (seconds each): one failing after a
# model is restored, one in the generator, one in feature extraction.
REAL_PROCESS = ("probe-budget-too-small", "synth-dim-too-small", "features-image-not-an-image")
assert set(REAL_PROCESS) <= set(_IDS)
_HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
assert len(set(_IDS)) == len(_IDS), (
  f"repeated case ids: {sorted({i for i in _IDS if _IDS.count(i) > 1})}"
)


# --------------------------------------------------------------------------------------------------
# Fixtures and the check.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bad_input_fixtures(tmp_path_factory) -> pathlib.Path:
  """The folder each case's sandbox starts as a copy of: store/, run/ (one training), reference/."""
  root = tmp_path_factory.mktemp("bad_input_fixtures")
  make_random_store(root / "store", n=SPLIT_ROWS)
  with pytest.MonkeyPatch.context() as mp:
    mp.chdir(root)  # the run's config keeps the relative store path `store`
    code = cli.main(
      [
        "train",
        "--config",
        str(ROOT / "configs" / "tiny.py"),
        "--workdir",
        "run",
        "--config.store=store",
      ]
    )
  assert code == 0, "training the tiny run failed"
  _reference_files(root / "reference")
  return root


def _reference_files(out: pathlib.Path) -> None:
  """A random FL-I2MoE (no compilation: abstract init, numpy values) in the reference layout."""
  from flax import nnx

  from flmoe_jax import convert
  from flmoe_jax.models import FLI2MoE, ModelConfig

  model = nnx.eval_shape(
    lambda: FLI2MoE(
      ModelConfig(
        input_dims=(4, 4), num_classes=2, hidden_dim=8, num_heads=2, num_layers=1, rw_hidden=8
      ),
      rngs=nnx.Rngs(0),
    )
  )
  fill_random(model)
  out.mkdir()
  np.savez(out / "model.npz", **convert.to_reference_state_dict(model))
  np.savez(out / "encoders.npz", **convert.to_reference_encoders(model, REF_NAMES))


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
  """Every folder, link and file under `root`: {relative path: kind (files: size, sha256)}."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    here = pathlib.Path(dirpath)
    out[str(here.relative_to(root)) + "/"] = ("dir",)
    for name in dirnames + filenames:
      p = here / name
      rel = str(p.relative_to(root))
      if p.is_symlink():
        out[rel] = ("link", os.readlink(p))
      elif name in filenames:
        data = p.read_bytes()
        out[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
  return out


def _changes(before: dict, after: dict) -> list[str]:
  added = sorted(set(after) - set(before))
  removed = sorted(set(before) - set(after))
  changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
  return [f"+{k}" for k in added] + [f"-{k}" for k in removed] + [f"~{k}" for k in changed]


def _run(case: Case, sandbox: pathlib.Path) -> int:
  """Runs the case; returns its exit status (the CLI's return value or SystemExit code)."""
  if callable(case.argv):
    try:
      case.argv(sandbox)
    except FlmoeError as e:
      return cli._fail(str(e))  # printed exactly as `flmoe` prints it
    pytest.fail(f"{case.id}: no error raised")
  argv = [str(a).replace("{sandbox}", str(sandbox)) for a in case.argv]
  try:
    return cli.main(argv)
  except SystemExit as e:  # argparse errors leave through SystemExit
    return e.code


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_bad_input(case, bad_input_fixtures, tmp_path, monkeypatch, capfd, caplog, recwarn):
  sandbox = tmp_path / "sandbox"
  shutil.copytree(bad_input_fixtures, sandbox, symlinks=True)
  monkeypatch.chdir(sandbox)
  if case.setup is not None:
    case.setup(sandbox)
  before = snapshot(sandbox)
  capfd.readouterr()  # anything the setup printed
  caplog.clear()
  recwarn.clear()

  code = _run(case, sandbox)

  err = capfd.readouterr().err
  lines = err.splitlines()
  assert code == 2, f"exit status {code}, stderr:\n{err}"
  assert len(lines) == 1 and lines[0].strip(), f"want exactly one line on stderr, got:\n{err}"
  assert lines[0].startswith("flmoe: error: "), lines[0]
  assert len(lines[0]) > len("flmoe: error: ") + 10, lines[0]
  for part in (case.expect,) if isinstance(case.expect, str) else case.expect:
    assert part in lines[0], f"{part!r} not in {lines[0]!r}"
  # Outside pytest, Python's last-resort handler prints WARNING+ records of unconfigured loggers
  # (absl, orbax) on stderr, above the error line; likewise the warnings a script shows by default.
  logged = [f"{r.levelname}:{r.name}:{r.getMessage()}" for r in caplog.records]
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING], logged
  shown = [w for w in recwarn if not issubclass(w.category, _HIDDEN_WARNINGS)]
  assert not shown, [f"{w.category.__name__}: {w.message}" for w in shown]
  changes = _changes(before, snapshot(sandbox))
  assert not changes, f"the failed command changed the sandbox: {changes[:10]}"

  if case.id in REAL_PROCESS:
    # The same command as a real process: its stderr holds what in-process capture cannot see.
    env = {
      **os.environ,
      "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    argv = [str(a).replace("{sandbox}", str(sandbox)) for a in case.argv]
    r = subprocess.run(
      [sys.executable, "-m", "flmoe_jax", *argv],
      cwd=sandbox,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == lines, r.stderr
    changes = _changes(before, snapshot(sandbox))
    assert not changes, f"the failed process changed the sandbox: {changes[:10]}"
