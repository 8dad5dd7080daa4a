"""TFDS builders (manual download) for MM-IMDb, ENRICO and MMHS150K, and a `RawDataset` adapter.

Importing this package imports tensorflow-datasets (not TensorFlow) and registers the builders
`mmimdb`, `enrico` and `mmhs150k` with tfds, so `tfds.builder(...)` / `tfds.data_source(...)` find
them.

* `prepare_tfds(name, raw_dir, data_dir)`: build one from its raw folder (array_record).
* `load_raw_from_tfds(name, data_dir, **options)`: read it back as a `RawDataset` (reader
  `tfds:<name>`).
"""

from flmoe_jax.data.tfds.adapter import LazyExamples, load_raw_from_tfds, prepare_tfds
from flmoe_jax.data.tfds.builders import BUILDERS, Enrico, Mmhs150k, Mmimdb, image_bytes

__all__ = [
  "BUILDERS",
  "Enrico",
  "LazyExamples",
  "Mmhs150k",
  "Mmimdb",
  "image_bytes",
  "load_raw_from_tfds",
  "prepare_tfds",
]
