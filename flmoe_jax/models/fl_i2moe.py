"""FL-I2MoE (docs/method.md 1.1-1.6) and the dense-Transformer baseline (docs/method.md 8, item 7).

Data flow (shapes for M modalities, E = M + 2 experts, H hidden, C classes):

  xs: M x [B, T_m, D_m] --project--> hs: M x [B, T_m, H]
  hs --ExpertStack (vmapped over E)--> expert logits [E, B, C], latents [E, B, M*H]
  hs --Reweighting--> weights [B, E];  logits = sum_e w_e * expert_logits_e

Training (`train_outputs`) runs every expert on the clean input and the M single-modality
perturbations in one batched call: the 1+M variants are an extra leading axis [1+M, B, ...] that
the experts treat as batch.
Dropout is explicit: `dropout_key=None` is deterministic (eval) everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx, struct

from flmoe_jax import choices
from flmoe_jax.models import layers, losses
from flmoe_jax.models.config import ModelConfig
from flmoe_jax.models.experts import Expert, ExpertStack
from flmoe_jax.models.reweighting import Reweighting

Array = jax.Array


@struct.dataclass
class ExpertOutput:
  """Outputs of all experts.

  Attributes:
    logits: [E, ..., C].
    latents: [E, ..., M*H] pooled latents.
    attn: [E, num_layers, ..., heads, L, L] post-softmax attention, or None.
  """

  logits: Array
  latents: Array
  attn: Array | None = None


@struct.dataclass
class MoEOutput:
  """Mixture outputs (evaluation / explanation path).

  Attributes:
    logits: [..., C] mixture logits sum_e w_e * expert_logits_e.
    expert_logits: [..., E, C].
    weights: [..., E] expert weights (rows sum to 1).
    latents: [..., E, M*H].
    attn: [E, num_layers, ..., heads, L, L] or None.
  """

  logits: Array
  expert_logits: Array
  weights: Array
  latents: Array
  attn: Array | None = None


@struct.dataclass
class TrainOutput:
  """Training-path outputs.

  Attributes:
    logits: [B, C] mixture of the clean expert logits.
    expert_logits: [B, E, C] clean expert logits.
    weights: [B, E].
    latents: [E, V, B, M*H]; V = 1+M variants (0 clean, 1+j modality j perturbed), V = 1 for the
      dense baseline.
    absent_logits: [E, M+1, B, C] expert logits with modality j mean-filled (j < M) or all filled
      (j = M), for the role-consistency and missing-modality losses; None when both are off.
    absent_weights: [M+1, B, E] gate weights on the same mean-filled variants; None likewise.
  """

  logits: Array
  expert_logits: Array
  weights: Array
  latents: Array
  absent_logits: Array | None = None
  absent_weights: Array | None = None


def _broadcast_masks(hs: Sequence[Array], masks: Sequence[Array]) -> list[Array]:
  """Masks [B, T_m] (or [..., T_m]) broadcast to the leading dims of hs [..., T_m, H].

  The experts work on any leading dims directly; nothing is reshaped, so a batch axis sharded
  over a mesh stays sharded (also under explicit-sharding meshes).
  """
  return [jnp.broadcast_to(m.astype(bool), h.shape[:-1]) for h, m in zip(hs, masks, strict=True)]


def _split_key(key: Array | None) -> tuple[Array | None, Array | None]:
  if key is None:
    return None, None
  k_exp, k_gate = jax.random.split(key)
  return k_exp, k_gate


def _mix(weights: Array, expert_logits: Array) -> Array:
  """[..., E] x [..., E, C] -> [..., C]."""
  return jnp.einsum("...e,...ec->...c", weights.astype(expert_logits.dtype), expert_logits)


class _Projections(nnx.Module):
  """What every model here shares: its `ModelConfig` and one trainable Linear D_m -> H per modality.

  Attributes:
    config: the architecture.
    input_dims, num_modalities, num_classes, hidden_dim, num_heads, num_layers: read from `config`.
    projections: M `nnx.Linear` D_m -> H.
  """

  def _init_common(self, config: ModelConfig, rngs: nnx.Rngs):
    self.config = config
    self.projections = nnx.List(
      [
        layers.linear(
          d,
          config.hidden_dim,
          torch_init=config.torch_init,
          dtype=config.dtype,
          param_dtype=config.param_dtype,
          rngs=rngs,
        )
        for d in config.input_dims
      ]
    )

  # Read from the config, not copied: one source for every size.
  input_dims = property(lambda self: self.config.input_dims)
  num_modalities = property(lambda self: self.config.num_modalities)
  num_classes = property(lambda self: self.config.num_classes)
  hidden_dim = property(lambda self: self.config.hidden_dim)
  num_heads = property(lambda self: self.config.num_heads)
  num_layers = property(lambda self: self.config.num_layers)

  def project(self, xs: Sequence[Array]) -> list[Array]:
    """Projects raw frozen-encoder features to the model width.

    Args:
      xs: M arrays [..., T_m, D_m].

    Returns:
      M arrays [..., T_m, H].
    """
    if len(xs) != self.num_modalities:
      raise ValueError(f"expected {self.num_modalities} modalities, got {len(xs)}")
    return [proj(x) for proj, x in zip(self.projections, xs, strict=True)]

  def project_means(self, means: Sequence[Array]) -> list[Array]:
    """Projects one raw vector per modality (e.g. the train-split means: the mean-fill vectors).

    The projection is affine, so the projected mean equals the mean of the projected features.

    Args:
      means: M arrays [D_m].

    Returns:
      M arrays [H].
    """
    return [h[0, 0] for h in self.project([jnp.asarray(m, jnp.float32)[None, None] for m in means])]


class FLI2MoE(_Projections):
  """Feature-level interaction MoE: M+2 Transformer experts mixed by a reweighting MLP.

  `FLI2MoE(ModelConfig(input_dims=(768, 768), num_classes=23), rngs=nnx.Rngs(0))`.

  Attributes:
    config: the `ModelConfig`.
    num_experts: E = M + 2.
    expert_names: ("uni_0", ..., "uni_{M-1}", "syn", "red").
    projections: M `nnx.Linear` D_m -> H.
    experts: `ExpertStack` (leading expert axis on every parameter).
    reweight: `Reweighting` gate.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    """Creates the model.

    Args:
      config: the architecture (`ModelConfig`; M = len(config.input_dims) >= 2).
      rngs: parameter RNG streams.
    """
    if config.num_modalities < 2:
      raise ValueError("FL-I2MoE needs at least two modalities")
    self._init_common(config, rngs)
    m = self.num_modalities
    self.num_experts = m + 2
    self.expert_names = tuple(f"uni_{i}" for i in range(m)) + ("syn", "red")
    self.experts = ExpertStack(config, self.num_experts, rngs=rngs)
    self.reweight = Reweighting(config, self.num_experts, rngs=rngs)

  def run_experts(
    self,
    hs: Sequence[Array],
    masks: Sequence[Array],
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    return_attn: bool = False,
  ) -> ExpertOutput:
    """Runs all E experts (vmapped) on projected features.

    Args:
      hs: M arrays [..., T_m, H]; the leading dims `...` may be [B] or [V, B] (variants).
      masks: M arrays [..., T_m] or [B, T_m] (broadcast against hs' leading dims).
      dropout_key: PRNG key, or None for deterministic; expert e uses fold_in(key, e).
      attn_delta: optional [E, num_layers, ..., heads, L, L] added to the post-softmax attention.
      return_attn: whether to return the attentions.

    Returns:
      ExpertOutput(logits [E, ..., C], latents [E, ..., M*H],
      attn [E, num_layers, ..., heads, L, L] or None).
    """
    keys = None
    if dropout_key is not None:
      keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        dropout_key, jnp.arange(self.num_experts)
      )
    logits, latents, attn = self.experts(
      list(hs),
      _broadcast_masks(hs, masks),
      dropout_keys=keys,
      attn_delta=attn_delta,
      return_attn=return_attn,
    )
    return ExpertOutput(logits=logits, latents=latents, attn=attn)

  def gate(
    self, hs: Sequence[Array], masks: Sequence[Array], *, dropout_key: Array | None = None
  ) -> Array:
    """Expert weights from the projected features.

    Args:
      hs: M arrays [..., T_m, H].
      masks: M arrays [..., T_m].
      dropout_key: PRNG key, or None for deterministic.

    Returns:
      [..., E] weights; rows sum to 1.
    """
    return self.reweight(hs, masks, dropout_key=dropout_key)

  def forward_projected(
    self,
    hs: Sequence[Array],
    masks: Sequence[Array],
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    return_attn: bool = False,
  ) -> MoEOutput:
    """Experts + gate + mixture on projected features (used by explanations).

    Args:
      hs: M arrays [..., T_m, H].
      masks: M arrays [..., T_m].
      dropout_key: PRNG key, or None for deterministic.
      attn_delta: optional [E, num_layers, ..., heads, L, L], see `run_experts`.
      return_attn: whether to return attentions in `MoEOutput.attn`.

    Returns:
      MoEOutput(logits [..., C], expert_logits [..., E, C], weights [..., E],
      latents [..., E, M*H], attn [E, num_layers, ..., heads, L, L] or None).
    """
    k_exp, k_gate = _split_key(dropout_key)
    eo = self.run_experts(
      hs, masks, dropout_key=k_exp, attn_delta=attn_delta, return_attn=return_attn
    )
    weights = self.gate(hs, masks, dropout_key=k_gate)
    expert_logits = jnp.moveaxis(eo.logits, 0, -2)
    return MoEOutput(
      logits=_mix(weights, expert_logits),
      expert_logits=expert_logits,
      weights=weights,
      latents=jnp.moveaxis(eo.latents, 0, -2),
      attn=eo.attn,
    )

  def __call__(
    self, xs: Sequence[Array], masks: Sequence[Array], *, dropout_key: Array | None = None
  ) -> MoEOutput:
    """Inference on raw features: project, run experts on clean input, gate, mix.

    Args:
      xs: M arrays [B, T_m, D_m].
      masks: M arrays [B, T_m], True = real token.
      dropout_key: PRNG key, or None for deterministic (eval).

    Returns:
      MoEOutput(logits [B, C], expert_logits [B, E, C], weights [B, E], latents [B, E, M*H]).
    """
    return self.forward_projected(self.project(xs), masks, dropout_key=dropout_key)

  def train_outputs(
    self,
    xs: Sequence[Array],
    masks: Sequence[Array],
    *,
    dropout_key: Array | None,
    noise_key: Array | None,
    fill_means: Sequence[Array] | None = None,
  ) -> TrainOutput:
    """Training forward: all experts over the clean input and all M perturbations at once.

    Args:
      xs: M arrays [B, T_m, D_m].
      masks: M arrays [B, T_m].
      dropout_key: PRNG key for dropout (None = deterministic, e.g. for tests).
      noise_key: PRNG key for the perturbation noise, or None to skip the M noise variants (only the
        interaction loss reads them: with its weight 0 they are a third of the experts' work wasted).
      fill_means: optional M raw train-split means [D_m]; when given, the M+1 mean-filled variants
        of the role-consistency and missing-modality losses run in the same batched call (their
        projection is not trained through: the fill is a constant of the step, as in the masking
        operator), and the gate is also run on them.

    Returns:
      TrainOutput(logits [B, C], expert_logits [B, E, C], weights [B, E],
      latents [E, 1+M, B, M*H] ([E, 1, B, M*H] without noise_key), absent_logits [E, M+1, B, C]
      and absent_weights [M+1, B, E], or None for both).
    """
    hs = self.project(xs)
    if noise_key is None:
      variants = [h[None] for h in hs]  # M x [1, B, T_m, H]: the clean input alone
    else:
      variants = losses.perturb_variants(hs, noise_key)  # M x [1+M, B, T_m, H]
    n_clean = variants[0].shape[0]
    absent_weights = None
    k_exp, k_gate = _split_key(dropout_key)
    if fill_means is not None:
      fills = jax.lax.stop_gradient(self.project_means(fill_means))
      absent = losses.fill_variants(hs, fills)  # M x [M+1, B, T_m, H]
      variants = [jnp.concatenate([v, a]) for v, a in zip(variants, absent, strict=True)]
      # The gate is small next to the experts; it sees the filled inputs as it would at test time.
      absent_weights = self.gate(absent, _broadcast_masks(absent, masks), dropout_key=k_gate)
    eo = self.run_experts(variants, masks, dropout_key=k_exp)  # [E, V, B, ...]
    weights = self.gate(hs, masks, dropout_key=k_gate)
    expert_logits = jnp.moveaxis(eo.logits[:, 0], 0, -2)  # clean variant, [B, E, C]
    return TrainOutput(
      logits=_mix(weights, expert_logits),
      expert_logits=expert_logits,
      weights=weights,
      latents=eo.latents[:, :n_clean],
      absent_logits=None if fill_means is None else eo.logits[:, n_clean:],
      absent_weights=absent_weights,
    )

  def training_loss(
    self,
    xs: Sequence[Array],
    masks: Sequence[Array],
    labels: Array,
    *,
    task_type: str,
    weights: dict[str, float | Array],
    dropout_key: Array | None,
    noise_key: Array | None,
    fill_means: Sequence[Array] | None = None,
  ) -> tuple[Array, dict[str, Array], TrainOutput]:
    """The training objective: `losses.fl_i2moe_loss` on `train_outputs` (docs/method.md 2.2).

    Args:
      xs, masks, dropout_key, noise_key, fill_means: as `train_outputs`.
      labels: the batch's labels.
      task_type: multilabel | multiclass | binary.
      weights: the `lambda_*` weights of `losses.fl_i2moe_loss` (floats or traced scalars).

    Returns:
      (loss, its terms {"task", "interaction", ...}, the TrainOutput).
    """
    out = self.train_outputs(
      xs, masks, dropout_key=dropout_key, noise_key=noise_key, fill_means=fill_means
    )
    loss, aux = losses.fl_i2moe_loss(out, labels, task_type=task_type, **weights)
    return loss, aux, out


class I2MoE(FLI2MoE):
  """The original I2MoE: the same experts, gate and losses over ONE pooled vector per modality.

  Each modality's projected tokens are mean-pooled over its real tokens (`layers.masked_mean`)
  into a single pseudo-token before the experts, so the experts attend over M pseudo-tokens instead
  of the token/patch sequences: the interaction experts can only see modality-level interactions.
  The gate already reads masked means. Everything else (perturbations, mean-filled variants,
  losses, training) is FL-I2MoE's, applied to the tokens before the pooling; the model's task
  numbers sit beside FL-I2MoE's and the dense baseline's in Table A. It has no token-level
  attention maps, so token explanations and pair probes are for `fl_i2moe` and `dense`.
  """

  def run_experts(
    self,
    hs: Sequence[Array],
    masks: Sequence[Array],
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    return_attn: bool = False,
  ) -> ExpertOutput:
    """Pools each modality to one pseudo-token [..., 1, H], then runs the experts on them.

    Args:
      hs: M arrays [..., T_m, H] (leading dims [B] or [V, B]).
      masks: M arrays [..., T_m] or [B, T_m].
      dropout_key: PRNG key, or None for deterministic.
      attn_delta: optional [E, num_layers, ..., heads, M, M] on the pseudo-tokens.
      return_attn: whether to return the pseudo-tokens' attentions.

    Returns:
      ExpertOutput(logits [E, ..., C], latents [E, ..., M*H], attn over the M pseudo-tokens).
    """
    masks = _broadcast_masks(hs, masks)
    pooled = [layers.masked_mean(h, m)[..., None, :] for h, m in zip(hs, masks, strict=True)]
    ones = [jnp.ones(p.shape[:-1], bool) for p in pooled]
    return super().run_experts(
      pooled, ones, dropout_key=dropout_key, attn_delta=attn_delta, return_attn=return_attn
    )


class DenseTransformer(_Projections):
  """Dense baseline: the same projections and ONE §1.3 Transformer, no gate, no perturbations.

  Outputs use the FL-I2MoE types with a singleton expert axis (weights are all ones).

  Attributes:
    num_experts: 1.
    expert_names: ("dense",).
    projections: M `nnx.Linear` D_m -> H.
    expert: the single `Expert` (no stacked axis).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    """Creates the baseline from the same `ModelConfig` as `FLI2MoE` (M >= 1 modalities; the gate
    and expert-init fields are unused)."""
    self._init_common(config, rngs)
    self.num_experts = 1
    self.expert_names = ("dense",)
    self.expert = Expert(config, rngs=rngs)

  def run_experts(
    self,
    hs: Sequence[Array],
    masks: Sequence[Array],
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    return_attn: bool = False,
  ) -> ExpertOutput:
    """Runs the single Transformer; same contract as `FLI2MoE.run_experts` with E = 1.

    Args:
      hs: M arrays [..., T_m, H].
      masks: M arrays [..., T_m] or [B, T_m].
      dropout_key: PRNG key, or None for deterministic.
      attn_delta: optional [1, num_layers, ..., heads, L, L].
      return_attn: whether to return the attentions.

    Returns:
      ExpertOutput(logits [1, ..., C], latents [1, ..., M*H],
      attn [1, num_layers, ..., heads, L, L] or None).
    """
    key = None if dropout_key is None else jax.random.fold_in(dropout_key, 0)
    logits, latent, attn = self.expert(
      list(hs),
      _broadcast_masks(hs, masks),
      dropout_key=key,
      attn_delta=None if attn_delta is None else attn_delta[0],
      return_attn=return_attn,
    )
    return ExpertOutput(
      logits=logits[None], latents=latent[None], attn=None if attn is None else attn[None]
    )

  def forward_projected(
    self,
    hs: Sequence[Array],
    masks: Sequence[Array],
    *,
    dropout_key: Array | None = None,
    attn_delta: Array | None = None,
    return_attn: bool = False,
  ) -> MoEOutput:
    """Forward on projected features; see `FLI2MoE.forward_projected` (weights = ones [..., 1]).

    Args:
      hs: M arrays [..., T_m, H].
      masks: M arrays [..., T_m].
      dropout_key: PRNG key, or None for deterministic.
      attn_delta: optional [1, num_layers, ..., heads, L, L].
      return_attn: whether to return attentions.

    Returns:
      MoEOutput(logits [..., C], expert_logits [..., 1, C], weights [..., 1],
      latents [..., 1, M*H], attn or None).
    """
    eo = self.run_experts(
      hs, masks, dropout_key=dropout_key, attn_delta=attn_delta, return_attn=return_attn
    )
    expert_logits = jnp.moveaxis(eo.logits, 0, -2)
    return MoEOutput(
      logits=eo.logits[0],
      expert_logits=expert_logits,
      weights=jnp.ones(expert_logits.shape[:-1], expert_logits.dtype),
      latents=jnp.moveaxis(eo.latents, 0, -2),
      attn=eo.attn,
    )

  def __call__(
    self, xs: Sequence[Array], masks: Sequence[Array], *, dropout_key: Array | None = None
  ) -> MoEOutput:
    """Inference on raw features.

    Args:
      xs: M arrays [B, T_m, D_m].
      masks: M arrays [B, T_m].
      dropout_key: PRNG key, or None for deterministic.

    Returns:
      MoEOutput(logits [B, C], expert_logits [B, 1, C], weights [B, 1], latents [B, 1, M*H]).
    """
    return self.forward_projected(self.project(xs), masks, dropout_key=dropout_key)

  def train_outputs(
    self,
    xs: Sequence[Array],
    masks: Sequence[Array],
    *,
    dropout_key: Array | None,
    noise_key: Array | None = None,
    fill_means: Sequence[Array] | None = None,
  ) -> TrainOutput:
    """Training forward on clean input only (the baseline has no interaction loss).

    Args:
      xs: M arrays [B, T_m, D_m].
      masks: M arrays [B, T_m].
      dropout_key: PRNG key, or None for deterministic.
      noise_key: unused; accepted for API compatibility with `FLI2MoE.train_outputs`.
      fill_means: unused; likewise.

    Returns:
      TrainOutput(logits [B, C], expert_logits [B, 1, C], weights [B, 1], latents [1, 1, B, M*H]).
    """
    del noise_key, fill_means
    out = self.forward_projected(self.project(xs), masks, dropout_key=dropout_key)
    return TrainOutput(
      logits=out.logits,
      expert_logits=out.expert_logits,
      weights=out.weights,
      latents=jnp.moveaxis(out.latents, -2, 0)[:, None],
    )

  def training_loss(
    self,
    xs: Sequence[Array],
    masks: Sequence[Array],
    labels: Array,
    *,
    task_type: str,
    weights: dict[str, float | Array],
    dropout_key: Array | None,
    noise_key: Array | None = None,
    fill_means: Sequence[Array] | None = None,
  ) -> tuple[Array, dict[str, Array], TrainOutput]:
    """The task loss alone (the baseline has no interaction terms); the other terms are zero.

    Args: as `FLI2MoE.training_loss` (`weights`, `noise_key`, `fill_means` are unused).
    """
    del weights, noise_key, fill_means
    out = self.train_outputs(xs, masks, dropout_key=dropout_key)
    loss = losses.task_loss(out.logits, labels, task_type)
    zero, zeros = jnp.zeros(()), jnp.zeros((1,))
    aux = {
      "task": loss,
      "interaction": zero,
      "int_terms": zeros,
      "role_terms": zeros,
      **dict.fromkeys(choices.EXTRA_LOSS_TERMS, zero),
    }
    return loss, aux, out
