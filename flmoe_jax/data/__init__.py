"""Data: the feature store (every stage's input) and the synthetic planted-interaction generator."""

from flmoe_jax.data.store import (
  FeatureStore,
  ModalitySpec,
  SplitArrays,
  StoreWriter,
  TaskSpec,
  open_store,
  write_store,
)

__all__ = [
  "FeatureStore",
  "ModalitySpec",
  "SplitArrays",
  "StoreWriter",
  "TaskSpec",
  "open_store",
  "write_store",
]
