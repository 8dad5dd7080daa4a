"""flmoe_jax: FL-I2MoE in JAX/Flax.

Interaction experts (one unique expert per modality, a synergy and a redundancy expert, a reweighting gate)
over the token/patch sequences of frozen pretrained encoders, trained with perturbation-based interaction
losses, with expert-wise explanations and Monte Carlo interaction probes.

Public API:
  FLI2MoE, DenseTransformer            the Flax NNX models (flmoe_jax.models)
  open_store, write_store              the feature store (flmoe_jax.data.store)
  train_and_evaluate                   training driver (flmoe_jax.train_lib)
  load_config                          config files + overrides (flmoe_jax.config)
"""

from flmoe_jax.config import load_config
from flmoe_jax.data.store import FeatureStore, open_store, write_store
from flmoe_jax.errors import FlmoeError

__version__ = "0.1.0"


def __getattr__(name):
  # Heavy modules (jax, flax) load on first use, so `import flmoe_jax` stays fast for the CLI and tools.
  if name in ("FLI2MoE", "DenseTransformer"):
    from flmoe_jax import models

    return getattr(models, name)
  if name == "train_and_evaluate":
    from flmoe_jax.train_lib import train_and_evaluate

    return train_and_evaluate
  raise AttributeError(f"module 'flmoe_jax' has no attribute {name!r}")


__all__ = [
  "DenseTransformer",
  "FLI2MoE",
  "FeatureStore",
  "FlmoeError",
  "load_config",
  "open_store",
  "train_and_evaluate",
  "write_store",
]
