"""The vocabularies of the options: every fixed set of choices a model or stage offers, declared once.

The modules that act on a choice (`explain.masking` on a fill, `models.experts` on an attention
implementation, ...) and the stage configs that offer it (`explain.config`, `probes.config`, and the
command line generated from them) all read it from here. The module imports nothing, so the CLI builds
its parser without loading jax.
"""

# Experts' attention: explicit einsum (gives the maps explanations read) or a fused
# `jax.nn.dot_product_attention` backend (`xla`, or `cudnn`: GPU flash attention, bf16 runs).
ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn")
# How position reaches the experts' layers: the fixed sinusoidal table (the paper's) or a learned one.
POSITION_ENCODINGS = ("sinusoidal", "learned")
# Learning-rate schedules (`train.step.learning_rate_schedule`): the reference's constant rate, linear
# warm-up then cosine decay, or warm-up, a held peak and a cosine decay over the run's last share.
LR_SCHEDULES = ("constant", "warmup_cosine", "warmup_stable_decay")
# The training objective's terms beyond the paper: each is `loss.lambda_<name>` in a run config and
# `<name>` in the loss's terms (`models.losses.fl_i2moe_loss`), named as the report names it.
EXTRA_LOSS_TERMS = {
  "role": "role consistency",
  "missing": "missing-modality task loss",
  "decor": "uniqueness decorrelation",
  "red_alone": "the redundancy expert's own task loss with one modality absent",
  "syn_residual": "the synergy expert's task loss at full weight beside the other experts",
}
# What a masked token is replaced with: the train-split mean of its position's features, or zeros.
FILL_MODES = ("mean", "zero")
# The probes' games also offer the marginal game: absent tokens from reference train examples.
PROBE_FILLS = (*FILL_MODES, "marginal")
# Token attribution maps of the explanation pipeline (docs/method.md 4.1).
ATTRIBUTION_METHODS = ("attnxgrad", "attn", "ig")
# Maps that may pre-select the probes' top-k tokens: the above, |grad x (h - fill)| of the game, or
# each token's |Shapley value| in the game.
PROBE_ATTRIBUTIONS = (*ATTRIBUTION_METHODS, "grad_x_input", "shapley")
IG_BASELINES = ("zero", "mean")
# Whose class is explained: the model's prediction or the label.
TARGET_SOURCES = ("pred", "true")
# Candidate pairs of the probes: top-k tokens per modality, random pairs, or every cross-modal pair.
PAIR_MODES = ("topk", "random", "all")
# Scales of a game's value (the target's logit, probability, log-odds, log-probability).
SCORE_SCALES = ("logit", "prob", "logodds", "logprob")
# Which checkpoint of a training seed is restored.
CHECKPOINTS = ("best", "latest")
# Storage dtypes of a feature store's arrays.
FEATURE_DTYPES = ("float16", "float32")
# Encoders' compute dtypes during extraction.
COMPUTE_DTYPES = ("float32", "bfloat16")
# What extraction does with an image file that cannot be read: stop, or drop the example.
ON_ERROR = ("fail", "skip")
