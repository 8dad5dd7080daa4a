"""Reference-checkpoint conversion: parity with the PyTorch reference outputs, exact round trips."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fill_random
from flax import nnx

from flmoe_jax import convert
from flmoe_jax.models import FLI2MoE, ModelConfig

VARIANTS = ("text_image", "image_image")
OUTPUT_KEYS = ("expert_logits", "weights", "logits", "latents")


def _load(reference_dir, variant):
  d = reference_dir / variant
  meta = json.loads((d / "meta.json").read_text())
  return (
    meta,
    convert.load_state_dict(d / "model.npz"),
    convert.load_state_dict(d / "encoders.npz"),
    np.load(d / "inputs.npz"),
    np.load(d / "outputs.npz"),
  )


@nnx.jit
def _eval(model, xs, masks):
  return model(xs, masks)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fixture_parity_float32(reference_dir, variant):
  meta, sd, enc, inputs, outputs = _load(reference_dir, variant)
  model = convert.from_reference_state_dict(
    sd, enc, meta["names"], num_heads=meta["heads"], temperature=meta["temperature"]
  )
  assert model.hidden_dim == meta["H"] and model.num_layers == meta["layers"]
  assert model.expert_names == tuple(meta["experts"])
  xs = [jnp.asarray(inputs[n]) for n in meta["names"]]
  masks = [jnp.asarray(inputs[f"{n}_mask"]) for n in meta["names"]]
  out = _eval(model, xs, masks)
  for key in OUTPUT_KEYS:
    got = np.asarray(getattr(out, key))
    assert got.shape == outputs[key].shape, key
    np.testing.assert_allclose(got, outputs[key], atol=1e-4, rtol=0, err_msg=key)
  # The weights actually differ between experts (the fixture perturbed every expert).
  assert np.ptp(np.asarray(out.expert_logits), axis=1).max() > 1e-3


_X64_SCRIPT = textwrap.dedent(
  """
  import json, sys
  import jax
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp, numpy as np
  from flax import nnx
  from flmoe_jax import convert
  root = sys.argv[1]
  worst = 0.0
  for variant in ("text_image", "image_image"):
    d = f"{root}/{variant}"
    meta = json.load(open(f"{d}/meta.json"))
    model = convert.from_reference_state_dict(
      f"{d}/model.npz", f"{d}/encoders.npz", meta["names"], num_heads=meta["heads"],
      temperature=meta["temperature"], dtype=jnp.float64, param_dtype=jnp.float64)
    inp, ref = np.load(f"{d}/inputs.npz"), np.load(f"{d}/outputs.npz")
    out = nnx.jit(lambda m, xs, ms: m(xs, ms))(
      model,
      [jnp.asarray(inp[n], jnp.float64) for n in meta["names"]],
      [jnp.asarray(inp[n + "_mask"]) for n in meta["names"]])
    assert out.logits.dtype == jnp.float64
    for k in ("expert_logits", "weights", "logits", "latents"):
      worst = max(worst, float(np.abs(np.asarray(getattr(out, k)) - ref[k]).max()))
  print(worst)
  """
)


def test_fixture_parity_float64(reference_dir):
  """In float64 the residual is the reference's own float32 rounding: about 1e-6."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = ""  # one device is enough in the child process
  res = subprocess.run(
    [sys.executable, "-c", _X64_SCRIPT, str(reference_dir)],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
    check=False,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  assert float(res.stdout.strip().splitlines()[-1]) < 2e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip_is_exact(reference_dir, variant):
  meta, sd, enc, _, _ = _load(reference_dir, variant)
  model = convert.from_reference_state_dict(sd, enc, meta["names"], num_heads=meta["heads"])
  back = convert.to_reference_state_dict(model)
  assert list(back) == list(sd) or set(back) == set(sd)
  for k, v in sd.items():
    assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
  back_enc = convert.to_reference_encoders(model, meta["names"])
  assert set(back_enc) == set(enc)
  for k, v in enc.items():
    assert np.array_equal(back_enc[k], v), k


def test_random_model_round_trip_three_modalities():
  """JAX -> reference layout -> JAX reproduces every parameter (M = 3, 3 reweighter layers)."""
  names = ("a", "b", "c")
  kw = dict(
    input_dims=(5, 6, 7),
    num_classes=3,
    hidden_dim=8,
    num_heads=2,
    num_layers=2,
    rw_layers=3,
    rw_hidden=6,
    identical_expert_init=False,
  )
  # Abstract model filled with numpy random values: skips compiling a random init.
  src = fill_random(nnx.eval_shape(lambda: FLI2MoE(ModelConfig(**kw), rngs=nnx.Rngs(1))))
  sd = convert.to_reference_state_dict(src)
  assert "reweight.mlp.network.6.weight" in sd
  assert "interaction_experts.4.fusion_model.network.2.fc.weight" in sd
  dst = convert.from_reference_state_dict(
    sd, convert.to_reference_encoders(src, names), names, num_heads=2
  )
  a = nnx.to_pure_dict(nnx.state(src, nnx.Param))
  b = nnx.to_pure_dict(nnx.state(dst, nnx.Param))
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_conversion_errors(reference_dir, tmp_path):
  meta, sd, enc, _, _ = _load(reference_dir, "text_image")
  names = meta["names"]
  missing = {k: v for k, v in sd.items() if not k.endswith("attn.q.weight")}
  with pytest.raises(KeyError):
    convert.from_reference_state_dict(missing, enc, names)
  with pytest.raises(ValueError, match="unexpected keys"):
    convert.from_reference_state_dict({**sd, "foo.weight": np.zeros(3)}, enc, names)
  with pytest.raises(ValueError, match="modalities"):
    convert.from_reference_state_dict(sd, enc, names[:1])
  with pytest.raises(ValueError, match="contradicts"):
    convert.from_reference_state_dict(sd, enc, names, hidden_dim=32)
  with pytest.raises(ValueError, match="unsupported"):
    convert.load_state_dict(tmp_path / "weights.safetensors")


def test_every_key_problem_is_reported_at_once(reference_dir):
  """Missing keys of several experts, a wrong shape and an unexpected key: one error names them all."""
  meta, sd, enc, _, _ = _load(reference_dir, "text_image")
  names = meta["names"]
  broken = {k: v for k, v in sd.items() if not k.endswith("attn.q.weight")}
  wrong = "reweight.mlp.network.0.bias"
  broken[wrong] = np.zeros(3, np.float32)
  broken["foo.weight"] = np.zeros(3, np.float32)
  model = convert.from_reference_state_dict(sd, enc, names)
  with pytest.raises(convert.ConversionError) as e:
    convert.load_reference_params(model, broken, enc, names)
  msg = str(e.value)
  n_missing = sum(k.endswith("attn.q.weight") for k in sd)
  assert n_missing >= 4 and msg.startswith(f"{n_missing + 2} problems with the reference weights")
  assert msg.count("attn.q.weight") == n_missing and wrong in msg and "foo.weight" in msg
  assert "\n" not in msg and not isinstance(e.value, KeyError)  # not only missing keys
  # Only missing keys: still a KeyError (MissingKeyError), as one missing key is.
  with pytest.raises(convert.MissingKeyError, match=f"{n_missing} problems"):
    convert.load_reference_params(
      model, {k: v for k, v in sd.items() if not k.endswith("attn.q.weight")}, enc, names
    )


def test_torch_file_needs_torch(tmp_path):
  try:
    import torch  # noqa: F401
  except ImportError:
    with pytest.raises(ImportError, match="needs PyTorch"):
      convert.load_state_dict(tmp_path / "model.pt")
  else:
    pytest.skip("torch is installed; the no-torch error path cannot be exercised")
