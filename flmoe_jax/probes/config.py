"""`ProbeConfig`: every option of `flmoe probe` / `run_probe`, declared once (jax-free).

  cfg = ProbeConfig(split="test", pairs="all", draws=16)
  report = run_probe(cfg, "runs/demo/synthetic/fl")

The command line is generated from the fields (`flmoe probe --help`); the report records them in its
`settings` block. docs/probes.md explains the games and estimators the options choose between.
"""

from __future__ import annotations

import dataclasses
import math

from flmoe_jax import choices
from flmoe_jax.errors import ProbeError
from flmoe_jax.options import StageConfig, documented, option

# A pair "stands out" when it ranks first in significantly more than this share of the examples.
DEFAULT_MIN_RATE = 0.1
# The smallest interaction worth calling, on the log-odds scale of the target (nats): 0.25 moves a
# probability of 0.5 to 0.56. Measured (docs/ground_truth.md 5.4): a copied pair the synergy expert
# merely passes on has SII <= 0.15 nats where it ranks first; planted XORs 6-18 nats.
DEFAULT_MIN_EFFECT = 0.25
# Examples probed when `samples` is not given (the whole split when it is smaller).
DEFAULT_SAMPLES = 200


@documented
@dataclasses.dataclass(frozen=True)
class ProbeConfig(StageConfig):
  """The options of the interaction probes (`flmoe probe`), each with its flag and default."""

  error = ProbeError

  split: str = option("test", "store split to probe")
  samples: int | None = option(
    None,
    "examples: the first rows of the split (default 200, or the whole split when smaller; more "
    "than the split holds is an error)",
    lowest=1,
  )
  budget: int | None = option(
    None,
    "coalition evaluations per example and expert game (default: draws x 4 x pairs)",
    lowest=1,
  )
  draws: int = option(64, "draws per pair when --budget is not set", lowest=1)
  pairs: str = option(
    "topk",
    "candidate pairs: the top-k tokens per modality, random pairs, or every cross-modal pair",
    choices=choices.PAIR_MODES,
  )
  k: int = option(8, "tokens per modality for --pairs topk", lowest=1)
  # Why the game's own Shapley values by default: a planted pair missing from the candidates cannot
  # rank first, and of the maps measured (docs/ground_truth.md 5.10) only this one kept the planted
  # pairs among the candidates in nearly every example on both stores measured (copied / XOR pair:
  # 100 / 99% in the top 4 x top 4 at L2, 100 / 88% in the top 2 x top 2 of a tiny store); attention
  # x gradient 38-95%, integrated gradients 47-100%, grad_x_input 53-77%.
  attribution: str = option(
    "shapley",
    "map that pre-selects the topk tokens (shapley: each token's |Shapley value| in the probe's "
    "game, --map-orders random orders; ig: integrated gradients of the probed expert; "
    "grad_x_input: |grad x (h - fill)| of the probe's game)",
    choices=choices.PROBE_ATTRIBUTIONS,
  )
  map_orders: int = option(
    8, "random orders (half of them the others reversed) of --attribution shapley", lowest=2
  )
  n_random_pairs: int = option(64, "pairs per example, --pairs random", lowest=1)
  max_all_pairs: int = option(
    4096, "refuse --pairs all beyond this many pairs per example", lowest=1, cli=False
  )
  seed: int = option(
    0, "seed of every draw (MC coalitions, random pairs, random masking control)", lowest=0
  )
  antithetic: bool = option(True, "antithetic Monte Carlo draws (--no-antithetic: plain draws)")
  max_coalitions_per_call: int = option(
    4096, "memory knob: most coalitions per model call, across a batch of examples"
  )
  fill: str = option(
    "mean",
    "what 'absent' means in the SII and RG games: the mean (or zero) fill, or marginal: the tokens "
    "of --references random train examples, the value averaged over them",
    choices=choices.PROBE_FILLS,
  )
  sii_fill: str | None = option(
    None, "the SII game's fill alone (default: --fill)", choices=choices.PROBE_FILLS
  )
  rg_fill: str | None = option(
    None, "the RG game's fill alone (default: --fill)", choices=choices.PROBE_FILLS
  )
  # Why 32: a pair's marginal interaction in an example comes only from the references that differ
  # from it in both tokens; of 8 random references, none do for a given state of two balanced bits
  # with probability 0.75^8 = 10%, and then every example in that state loses the pair
  # (docs/probes.md "Fill"); at 32, 0.01%.
  references: int = option(
    32,
    "reference examples of the marginal fill (cost: that many model passes per coalition)",
    lowest=1,
  )
  target: str = option(
    "pred", "the class explained: the prediction or the label", choices=choices.TARGET_SOURCES
  )
  run_seed: int | None = option(None, "training seed (default: the first finished)", lowest=0)
  which: str = option("best", "which checkpoint of that seed", choices=choices.CHECKPOINTS)
  mask_budgets: tuple[int, ...] = option((1, 2, 5, 10), "pair budgets b of the pair masking")
  mask_repeats: int = option(10, "random-control repeats", lowest=1, flag="--repeats")
  sii_rank_score: str = option(
    "logodds",
    "scale that ranks SII pairs for pair masking and the standout tests (logodds: the target's "
    "log-odds, shift-invariant and unrounded)",
    choices=choices.SCORE_SCALES,
  )
  rg_rank_score: str = option("logodds", "the same for RG pairs", choices=choices.SCORE_SCALES)
  sii_expert: str | None = option(None, "game of the SII probe (default syn; or mixture)")
  rg_expert: str | None = option(None, "game of the RG probe (default red; or mixture)")
  standout_min_rate: float = option(
    DEFAULT_MIN_RATE,
    "across examples, a pair stands out when it ranks first in significantly more than this "
    "share of them",
  )
  min_effect: float = option(
    DEFAULT_MIN_EFFECT,
    "smallest share of the target's log-odds (nats: the expert's gate weight x its score) with "
    "which an example's first pair is called (the called@1 rates, cross-talk, 'called' standouts)",
    lowest=0.0,
  )
  attention: str | None = option(
    None,
    "experts' attention for the probe: explicit einsum, or fused jax.nn.dot_product_attention "
    "(xla, or cudnn: GPU flash attention, bf16 runs); default: the run's model.attention",
    choices=choices.ATTENTION_IMPLEMENTATIONS,
  )
  figures: bool = option(True, "write PNG heatmaps and masking curves (--no-figures: JSON only)")
  n_heatmaps: int = option(4, "examples with heatmaps", lowest=0, cli=False)
  tag: str = option("", "write W/probe/<split>_<tag>.json instead (settings side by side)")
  stability: bool = option(
    False,
    "also probe with another MC seed and another training seed, and record how much the pair "
    "rankings agree (Kendall tau, top-k overlap; 2-3x the cost)",
  )

  def validate(self) -> None:
    if not 0.0 <= self.standout_min_rate < 1.0:
      raise ProbeError(f"--standout-min-rate must be in [0, 1), got {self.standout_min_rate}")
    if not math.isfinite(self.min_effect):
      raise ProbeError(f"--min-effect must be a finite number >= 0 (nats), got {self.min_effect}")
    if not self.mask_budgets or min(self.mask_budgets) < 1:
      raise ProbeError(
        f"mask budgets (--mask-budgets) must be positive pair counts, got {list(self.mask_budgets)}"
      )
    if self.tag and not self.tag.replace("-", "").replace("_", "").isalnum():
      raise ProbeError(f"--tag {self.tag!r} must be alphanumeric (with - or _)")

  @property
  def role_fill(self) -> dict[str, str]:
    """The fill of each probe role's game (`sii`, `rg`)."""
    return {"sii": self.sii_fill or self.fill, "rg": self.rg_fill or self.fill}

  @property
  def stem(self) -> str:
    """The probe file's name without suffix: `<split>` or `<split>_<tag>`."""
    return f"{self.split}_{self.tag}" if self.tag else self.split
