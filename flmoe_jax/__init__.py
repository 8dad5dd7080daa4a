"""flmoe_jax: FL-I2MoE in JAX/Flax.

Interaction experts (one unique expert per modality, a synergy and a redundancy expert, a reweighting gate)
over the token/patch sequences of frozen pretrained encoders, trained with perturbation-based interaction
losses, with expert-wise explanations and Monte Carlo interaction probes.

Public API (the stages in pipeline order; heavy names load on first use, so `import flmoe_jax` is fast):

  open_store, write_store, FeatureStore  the feature store (flmoe_jax.data.store)
  load_config                            config files + overrides (flmoe_jax.config)
  ModelConfig, build_model, FLI2MoE, I2MoE, DenseTransformer
                                         the Flax NNX models and their architecture (flmoe_jax.models)
  train_and_evaluate, TrainSummary       training driver and its artifact (flmoe_jax.train)
  ExplainReport, ProbeReport             the explain and probe artifacts (typed, versioned JSON)
  RunDir                                 a run directory's layout (flmoe_jax.rundir)
  ExplainConfig, run_explain             expert-wise explanations (flmoe_jax.explain)
  ProbeConfig, run_probe                 interaction probes (flmoe_jax.probes)
  FlmoeError                             every error a user can cause (flmoe_jax.errors)

`docs/api.py` builds the API reference from the docstrings (`make api`).
"""

from flmoe_jax import lazy
from flmoe_jax.config import load_config as load_config
from flmoe_jax.data.store import FeatureStore as FeatureStore
from flmoe_jax.data.store import open_store as open_store
from flmoe_jax.data.store import write_store as write_store
from flmoe_jax.errors import FlmoeError as FlmoeError
from flmoe_jax.rundir import RunDir as RunDir

__version__ = "0.1.0"

_LAZY = {
  "ModelConfig": "flmoe_jax.models.config",
  "FLI2MoE": "flmoe_jax.models",
  "I2MoE": "flmoe_jax.models",
  "DenseTransformer": "flmoe_jax.models",
  "build_model": "flmoe_jax.models",
  "train_and_evaluate": "flmoe_jax.train.loop",
  "TrainSummary": "flmoe_jax.train_summary",
  "ExplainReport": "flmoe_jax.explain.results",
  "ProbeReport": "flmoe_jax.probes.results",
  "ExplainConfig": "flmoe_jax.explain.config",
  "run_explain": "flmoe_jax.explain.pipeline",
  "ProbeConfig": "flmoe_jax.probes.config",
  "run_probe": "flmoe_jax.probes.pipeline",
}


__getattr__, __all__ = lazy.exports(
  __name__,
  _LAZY,
  eager=["FeatureStore", "FlmoeError", "RunDir", "load_config", "open_store", "write_store"],
)
