"""`flmoe convert`: the authors' weights become a run directory the later stages use as it is."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from flmoe_jax import cli, convert, runs
from flmoe_jax import metrics as metrics_lib
from flmoe_jax.data import store as store_lib

VARIANT = "text_image"  # reference dims 48 (language) and 40 (img), 5 classes, lengths 12 and 9


def _store(path, *, text_dim=48, num_classes=5):
  rng = np.random.default_rng(0)
  mods = [
    store_lib.ModalitySpec(name="text", dim=text_dim, max_len=12, kind="tokens", encoder="r"),
    store_lib.ModalitySpec(name="image", dim=40, max_len=9, kind="patches", encoder="r"),
  ]
  splits = {}
  for name, n in (("train", 24), ("val", 12), ("test", 12)):
    lens = rng.integers(3, 13, size=(n, 1))
    splits[name] = store_lib.SplitArrays(
      features={
        "text": rng.normal(size=(n, 12, text_dim)).astype(np.float32),
        "image": rng.normal(size=(n, 9, 40)).astype(np.float32),
      },
      masks={"text": np.arange(12)[None] < lens, "image": np.ones((n, 9), bool)},
      labels=rng.integers(0, num_classes, size=n).astype(np.int32),
      ids=[f"{name}{i}" for i in range(n)],
    )
  task = store_lib.TaskSpec(
    type="multiclass", num_classes=num_classes, class_names=tuple(map(str, range(num_classes)))
  )
  return store_lib.write_store(path, modalities=mods, task=task, splits=splits, dtype="float32")


def _convert(capsys, reference_dir, store, workdir, *extra):
  d = reference_dir / VARIANT
  code = cli.main(
    [
      "convert",
      "--weights",
      str(d / "model.npz"),
      "--encoders",
      str(d / "encoders.npz"),
      "--store",
      str(store),
      "--names",
      "language,img",
      "--workdir",
      str(workdir),
      *extra,
    ]
  )
  out = capsys.readouterr()
  return code, out.out, out.err


def test_converted_run_holds_the_reference_model_and_the_stages_use_it(
  reference_dir, tmp_path, capsys
):
  store = _store(tmp_path / "store")
  w = tmp_path / "run"
  code, out, err = _convert(capsys, reference_dir, store, w)
  assert code == 0, err
  assert "run directory" in out
  # The restored run computes what the converted reference model computes.
  d = reference_dir / VARIANT
  ref = convert.from_reference_state_dict(d / "model.npz", d / "encoders.npz", ["language", "img"])
  run = runs.load_run(w)
  fs = run.store
  data = fs.gather("test", np.arange(fs.counts["test"]))
  xs = [jnp.asarray(x) for x in data["x"]]
  masks = [jnp.asarray(m) for m in data["mask"]]
  want = np.asarray(ref(xs, masks).logits)
  np.testing.assert_allclose(np.asarray(run.model(xs, masks).logits), want, rtol=1e-5, atol=1e-6)
  # Its summary's test metrics are those of the reference logits.
  summary = json.loads((w / "summary.json").read_text())
  acc = metrics_lib.compute_metrics("multiclass", want, data["label"])["accuracy"]
  assert summary["seeds"]["0"]["test"]["accuracy"] == pytest.approx(acc, abs=1e-9)
  assert summary["model"] == "fl_i2moe" and run.config.model.hidden_dim == 64
  # explain and report take it as any trained run.
  assert cli.main(["explain", "--workdir", str(w), "--split", "test", "--no-figures"]) == 0
  assert (w / "explain" / "test.json").is_file()
  assert cli.main(["report", "--workdir", str(w), "--split", "test"]) == 0
  capsys.readouterr()


@pytest.mark.parametrize(
  "case, message",
  [
    ("missing_key", "problems with the reference weights"),
    ("text_dim", "the weights take 48-dim features, the store holds 32"),
    ("classes", "the weights predict 5 classes, the store's task has 3"),
    ("exists", "already exists"),
  ],
)
def test_a_failed_conversion_writes_nothing(reference_dir, tmp_path, capsys, case, message):
  store = _store(
    tmp_path / "store",
    text_dim=32 if case == "text_dim" else 48,
    num_classes=3 if case == "classes" else 5,
  )
  w = tmp_path / "run"
  extra = []
  if case == "missing_key":
    sd = convert.load_state_dict(reference_dir / VARIANT / "model.npz")
    broken = {k: v for k, v in sd.items() if not k.endswith("attn.q.weight")}
    np.savez(tmp_path / "broken.npz", **broken)
    extra = ["--weights", str(tmp_path / "broken.npz")]  # the later flag wins
  if case == "exists":
    w.mkdir()
    (w / "notes.txt").write_text("mine")
  code, _, err = _convert(capsys, reference_dir, store, w, *extra)
  assert code == 2 and err.startswith("flmoe: error:") and message in err, err
  assert len(err.strip().splitlines()) == 1
  if case == "exists":
    assert [p.name for p in w.iterdir()] == ["notes.txt"]
  else:
    assert not w.exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
