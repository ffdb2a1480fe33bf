"""One typed config: frozen dataclasses, named presets, dotted overrides.

Every key a user can set is a field below; `apply_overrides` rejects anything
else with one line naming the key.  Stable key names (users' scripts and sweeps
use them) are listed in docs/DESIGN.md section 4.2.

    cfg = load_config("tiny", ["train.examples=65536", "model.top_mlp=64,32"])
    cfg.to_dict()   # -> what config.json holds; from_dict(...) reads it back
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from dlrm_jax.data.criteo.table_sizes import (
    KAGGLE_TABLE_ROWS,
    MLPERF_DCNV2_MULTI_HOT,
    MLPERF_DCNV2_TABLE_ROWS,
    MLPERF_TABLE_ROWS,
)
from dlrm_jax.embedding import support as embedding_support
from dlrm_jax.errors import UserError
from dlrm_jax.model import interactions  # names and knob checks; JAX-free (Flax loads on first lookup)
from dlrm_jax.overrides import coerce, flatten, split_assignment

# Allowed values of the string options, declared once: the override parser
# checks them, and the modules that branch on them read them from here.
DenseOptimizer = Literal["adam", "adagrad", "sgd", "adagrad_torch"]
Decay = Literal["none", "cosine", "linear"]
ComputeDtype = Literal["float32", "bfloat16"]
Sharding = Literal["replicated", "row", "table", "auto"]
EmbeddingBackend = Literal["tensorcore", "sparsecore"]
Pooling = Literal["sum", "mean"]
BagExchange = Literal["auto", "pooled", "rows"]


@dataclass(frozen=True)
class TrainConfig:
    examples: int = 1 << 20          # training examples (one pass unless epochs > 1)
    batch_size: int = 1024           # global batch
    epochs: int = 1                  # passes over a finite data set
    optimizer: DenseOptimizer = "adam"  # dense params
    learning_rate: float = 1e-3      # dense params peak learning rate
    warmup_examples: int = 0         # linear warm-up of the dense learning rate
    decay: Decay = "none"            # cosine and linear decay to 0 at the end
    log_every_examples: int = 0      # train-loss log interval (0: ~20 per run)
    eval_every_examples: int = 0     # eval interval (0: only at the end)
    # The training-FLOP budget an IsoFLOP sweep sized this run for (sweeps/isoflop.py);
    # recorded in config.json and results.csv so the analysis can group runs by it,
    # not enforced (train.examples decides). 0: not part of an IsoFLOP study.
    flop_budget: int = 0


@dataclass(frozen=True)
class EvalConfig:
    examples: int = 1 << 16          # held-out examples evaluated
    batch_size: int = 8192
    auc_target: float = 0.0          # > 0: the summary says whether eval AUC reached it (MLPerf's target)


@dataclass(frozen=True)
class ModelConfig:
    embed_dim: int = 16                            # D
    table_rows: int | tuple[int, ...] = 0          # per-feature rows, or one cap (0: no cap)
    bottom_mlp: tuple[int, ...] = (64, 32)         # hidden sizes; output = embed_dim
    top_mlp: tuple[int, ...] = (64, 32)            # hidden sizes; then 1 logit
    # a name in dlrm_jax.model.interactions.REGISTRY (dot, cat, dcn, wukong); validate checks it
    interaction: str = "dot"
    compute_dtype: ComputeDtype = "float32"        # MLPs and interaction
    # dcn: DCNv2 cross layers on the flattened [B, (F+1) D] (dlrm_jax/model/interactions/dcn.py)
    dcn_layers: int = 3
    dcn_rank: int = 0                              # low rank r of W V; 0: full rank
    # wukong: stacked FMB + LCB layers on the [F+1, D] embedding matrix (dlrm_jax/model/interactions/wukong.py)
    wukong_layers: int = 2
    wukong_fmb_k: int = 8                          # k: the FM block's n x k projection
    wukong_nf: int = 8                             # n_F: embeddings out of the FM block
    wukong_nl: int = 8                             # n_L: embeddings out of the linear compression block
    wukong_mlp: tuple[int, ...] = (64,)            # the FM block's MLP hidden sizes
    multi_hot: int | tuple[int, ...] = 1           # ids per example of each feature (bags), or one size for all
    multi_hot_pooling: Pooling = "sum"             # how a bag's rows are pooled (dlrm_jax/embedding/bags.py)


@dataclass(frozen=True)
class EmbeddingConfig:
    # One its backend supports (dlrm_jax/embedding/support.py: every one on the TensorCore,
    # sgd and adagrad on SparseCores); `validate` refuses the others naming those.
    optimizer: str = "rowwise_adagrad"
    learning_rate: float = 0.05
    eps: float = 1e-8                    # Adagrad: g / sqrt(acc + eps); *_torch: g / (sqrt(acc) + eps)
    initial_accumulator: float = 0.0
    init_scale: float = 0.0              # 0: uniform(+-1/sqrt(rows)) as reference DLRM
    sharding: Sharding = "auto"          # dlrm_jax/embedding/placement.py says what each does
    # auto: tables smaller than this are replicated.  A replicated group's update
    # all-reduces its dense gradient (rows x D per step, whatever the device count),
    # worth it only when that is small beside a device's exchange traffic (b x F x D):
    # at 65536 the criteo-mlperf shape's small tables (121k rows) all-reduced 62 MB
    # per step against 23 MB for the whole exchange at 512 examples per device.
    replicate_below_rows: int = 4096
    exchange_headroom: float = 2.0       # sharded tables: all-to-all capacity over an even spread (exchange.py)
    # Multi-hot bags of a sharded group: pooled (owners sum their rows per bag, pooled.py), rows
    # (one row per unique id, exchange.py), auto: whichever moves fewer bytes (a static choice).
    bag_exchange: BagExchange = "auto"
    # tensorcore: the single-device / shard_map paths (CPU, GPU, every TPU); sparsecore: TPU
    # v5p, v6e, tpu7x SparseCores through jax-tpu-embedding (dlrm_jax/embedding/sparsecore/backend.py)
    backend: EmbeddingBackend = "tensorcore"
    tensorcore_below_rows: int = 21000   # sparsecore: smaller tables stay on the TensorCore (RecML's threshold)


@dataclass(frozen=True)
class MeshConfig:
    data: int = -1     # -1 fills the remaining devices
    model: int = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """The Criteo-shaped teacher (dlrm_jax/data/synthetic.py says how it is used)."""
    seed: int = 0                                  # the data "world"; independent of `seed`
    cardinalities: int | tuple[int, ...] = 20000   # per-feature ids, or the largest (others spread below)
    zipf: float = 1.05                             # id popularity exponent
    base_ctr: float = 0.25                         # mean click probability
    id_effect: float = 1.5                         # std of summed per-id logit effects
    pair_effect: float = 1.0                       # std of summed pairwise-interaction effects
    dense_effect: float = 0.8                      # std of the dense-feature effect
    latent_dim: int = 4                            # rank of the pairwise teacher
    # A fitted world (dlrm_jax/data/world.py): a shipped name (criteo-like) or a world
    # JSON file from `dlrm-scaling data calibrate`.  When set, its per-feature id
    # laws, dense marginals, click rate and teacher strengths replace cardinalities,
    # zipf, base_ctr and the effect sizes above ("" = the default world).
    world: str = ""


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"        # synthetic | criteo:DATA_DIR
    train_split: str = "train"
    eval_split: str = "val"
    shuffle_window: int = 0          # criteo: shuffle within windows of this many rows


@dataclass(frozen=True)
class CheckpointConfig:
    every_examples: int = 0          # 0: only at the end
    keep: int = 2                    # checkpoints kept (>= 2: a damaged newest one falls back to the one before)
    restart_if_unreadable: bool = False  # no readable checkpoint left: start from step 0 instead of exit 2


@dataclass(frozen=True)
class DistributedConfig:
    initialize: bool = False         # call jax.distributed.initialize()
    coordinator: str = ""            # host:port ("" = auto-detect, e.g. on Cloud TPU)
    num_processes: int = 0
    process_id: int = -1


@dataclass(frozen=True)
class Config:
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        """`cfg.replace(**{"train.examples": 1024})`: dotted keys, validated."""
        return apply_overrides(self, overrides)


# --------------------------------------------------------------------------- presets

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on a laptop CPU; what the tests train.
    "tiny": {
        "train.examples": 1 << 14, "train.batch_size": 256, "train.learning_rate": 3e-3,
        "eval.examples": 1 << 13, "eval.batch_size": 4096,
        "model.embed_dim": 8, "model.bottom_mlp": (16,), "model.top_mlp": (32,),
        "embedding.learning_rate": 0.1,
        "synthetic.cardinalities": 500, "synthetic.zipf": 1.1,
    },
    # The CPU study: the demo's sweeps scale from here.
    "small": {
        "train.examples": 1 << 20, "train.batch_size": 1024,
        "eval.examples": 1 << 16,
        "model.embed_dim": 16, "model.bottom_mlp": (64, 32), "model.top_mlp": (64, 32),
        "synthetic.cardinalities": 20000, "synthetic.zipf": 1.05,
    },
    # Reference DLRM on Criteo Kaggle: bottom 13-512-256-64-16, top 512-256-1.
    "criteo-kaggle": {
        "train.batch_size": 2048,
        "model.embed_dim": 16, "model.bottom_mlp": (512, 256, 64), "model.top_mlp": (512, 256),
        # Tables take their rows from the data (model.table_rows 0 = no cap): the
        # Kaggle vocabulary sizes on synthetic data, the manifest's on prepared Criteo.
        "synthetic.cardinalities": KAGGLE_TABLE_ROWS,
    },
    # MLPerf DLRM on Criteo 1TB: dim 128, bottom 13-512-256-128, top 1024-1024-512-256-1.
    "criteo-mlperf": {
        "train.batch_size": 65536,
        "model.embed_dim": 128, "model.bottom_mlp": (512, 256), "model.top_mlp": (1024, 1024, 512, 256),
        "model.table_rows": 40_000_000,
        "synthetic.cardinalities": MLPERF_TABLE_ROWS,
    },
    # MLPerf Training DLRMv2 (DLRM-DCNv2) on multi-hot Criteo 1TB, as the reference
    # (mlcommons/training recommendation_v2/torchrec_dlrm) runs it: DCN 3 layers rank 512, multi-hot bags
    # (sum pooling; data: `dlrm-scaling data criteo-multihot`),
    # rows as its --num_embeddings_per_feature, Adagrad as PyTorch (dense) and FBGEMM
    # (embeddings: exact row-wise Adagrad) compute it, g / (sqrt(acc) + eps), eps 1e-8,
    # accumulators from 0; lr 0.004 at global batch 65,536, no warm-up or decay; target AUC 0.80275.
    "criteo-mlperf-dcnv2": {
        "train.batch_size": 65536, "train.optimizer": "adagrad_torch", "train.learning_rate": 0.004,
        "eval.auc_target": 0.80275,
        "model.embed_dim": 128, "model.bottom_mlp": (512, 256), "model.top_mlp": (1024, 1024, 512, 256),
        "model.interaction": "dcn", "model.dcn_layers": 3, "model.dcn_rank": 512,
        "model.table_rows": MLPERF_DCNV2_TABLE_ROWS, "model.multi_hot": MLPERF_DCNV2_MULTI_HOT,
        "embedding.optimizer": "rowwise_adagrad_torch", "embedding.learning_rate": 0.004,
        "embedding.eps": 1e-8, "embedding.initial_accumulator": 0.0,
        "synthetic.cardinalities": MLPERF_DCNV2_TABLE_ROWS,
    },
}


def load_config(preset: str | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """A preset (or the defaults) with `key=value` strings or a {key: value} map applied."""
    cfg = Config()
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        cfg = apply_overrides(cfg, PRESETS[preset])
    if not isinstance(overrides, Mapping):
        overrides = dict(split_assignment(s) for s in overrides)
    return apply_overrides(cfg, overrides)


def from_dict(d: Mapping[str, Any]) -> Config:
    """Inverse of `Config.to_dict` (reads config.json); unknown keys are errors."""
    return apply_overrides(Config(), dict(flatten(d)))


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, raw in overrides.items():
        ftype, group = field_type(key)
        value = coerce(key, raw, ftype)
        if group is None:
            top[key] = value
        else:
            groups.setdefault(group, {})[key.split(".", 1)[1]] = value
    for group, values in groups.items():
        top[group] = dataclasses.replace(getattr(cfg, group), **values)
    cfg = dataclasses.replace(cfg, **top)
    validate(cfg)
    return cfg


# Ints above this lose their value once anything turns them into a float64 (numpy
# schedules, FLOP counts, JSON readers such as pandas'); no count a run uses comes near.
MAX_INT = 2 ** 53
# Except a FLOP budget: a label (sweeps/isoflop.py rounds it from a float product), and
# paper-scale budgets pass 2**53 (one petaFLOP/s-day is 8.6e19 FLOPs).
_UNBOUNDED_INTS = ("train.flop_budget",)


def check_numbers(cfg: Config) -> None:
    """Every float finite and every int below 2**53 in magnitude, naming the dotted key.

    `float()` reads "nan", "inf" and "1e400" (as inf) without complaint, and JSON
    readers take NaN and Infinity; the range checks below compare with them silently
    (nan > 0 is False, inf > 0 is True), so this runs first."""
    for key, value in flatten(cfg.to_dict()):
        items = enumerate(value) if isinstance(value, (list, tuple)) else ((None, value),)
        for i, v in items:
            where = key if i is None else f"{key}[{i}]"
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"{where} must be a finite number, got {v}")
            if (isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_INT
                    and key not in _UNBOUNDED_INTS):
                raise UserError(f"{where} must be below 2**53 in magnitude, got {v}")


def validate(cfg: Config) -> None:
    """Value checks that do not need data or devices; one clear line each."""
    check_numbers(cfg)
    t, m, e = cfg.train, cfg.model, cfg.embedding

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise UserError(msg)

    need(t.examples > 0, f"train.examples must be positive, got {t.examples}")
    need(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}")
    need(t.batch_size <= t.examples * t.epochs,
         f"train.batch_size ({t.batch_size}) is larger than the training examples ({t.examples * t.epochs})")
    need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    need(t.learning_rate > 0, f"train.learning_rate must be positive, got {t.learning_rate}")
    for k in ("warmup_examples", "log_every_examples", "eval_every_examples", "flop_budget"):
        need(getattr(t, k) >= 0, f"train.{k} must be >= 0, got {getattr(t, k)}")
    need(cfg.eval.examples > 0, f"eval.examples must be positive, got {cfg.eval.examples}")
    need(0 <= cfg.eval.auc_target < 1, f"eval.auc_target must be in [0, 1), got {cfg.eval.auc_target}")
    need(cfg.eval.batch_size > 0, f"eval.batch_size must be positive, got {cfg.eval.batch_size}")
    need(m.embed_dim > 0, f"model.embed_dim must be positive, got {m.embed_dim}")
    rows = m.table_rows if isinstance(m.table_rows, tuple) else (m.table_rows,)
    need(all(r >= 0 for r in rows) and (not isinstance(m.table_rows, tuple) or all(r > 0 for r in rows)),
         f"model.table_rows must be positive, got {m.table_rows}")
    need(all(h > 0 for h in m.bottom_mlp + m.top_mlp), "model.bottom_mlp and model.top_mlp sizes must be positive")
    interactions.validate(m)   # the name, then each registered interaction's own knobs
    hot = m.multi_hot if isinstance(m.multi_hot, tuple) else (m.multi_hot,)
    need(all(k >= 1 for k in hot) and (isinstance(m.multi_hot, int) or len(hot) == 26),
         f"model.multi_hot needs sizes >= 1, one or 26 of them, got {m.multi_hot}")
    need(e.learning_rate > 0, f"embedding.learning_rate must be positive, got {e.learning_rate}")
    for k in ("eps", "initial_accumulator", "init_scale"):
        need(getattr(e, k) >= 0, f"embedding.{k} must be >= 0, got {getattr(e, k)}")
    need(e.exchange_headroom > 0, f"embedding.exchange_headroom must be > 0, got {e.exchange_headroom}")
    need(e.replicate_below_rows >= 0, f"embedding.replicate_below_rows must be >= 0, got {e.replicate_below_rows}")
    need(e.tensorcore_below_rows >= 0, f"embedding.tensorcore_below_rows must be >= 0, got {e.tensorcore_below_rows}")
    need(cfg.data.shuffle_window >= 0, f"data.shuffle_window must be >= 0, got {cfg.data.shuffle_window}")
    for k, v in (("seed", cfg.seed), ("synthetic.seed", cfg.synthetic.seed)):
        need(0 <= v < 2 ** 31, f"{k} must be in [0, 2**31), got {v}")
    need(t.epochs == 1 or t.examples % t.batch_size == 0,
         f"with train.epochs > 1, train.examples ({t.examples}) must be a multiple of "
         f"train.batch_size ({t.batch_size}) so every epoch holds the same examples")
    need(cfg.mesh.data == -1 or cfg.mesh.data >= 1, f"mesh.data must be >= 1 or -1, got {cfg.mesh.data}")
    need(cfg.mesh.model == -1 or cfg.mesh.model >= 1, f"mesh.model must be >= 1 or -1, got {cfg.mesh.model}")
    need(not (cfg.mesh.data == -1 and cfg.mesh.model == -1), "only one of mesh.data, mesh.model may be -1")
    # The backend's own list (after the mesh: with mesh.data and mesh.model fixed, which
    # TensorCore backend runs is known now, else the list both of them support).
    why = embedding_support.optimizer_error(e.backend, e.optimizer, cfg.mesh.data, cfg.mesh.model)
    need(why is None, why or "")
    s = cfg.synthetic
    cards = s.cardinalities if isinstance(s.cardinalities, tuple) else (s.cardinalities,)
    need(all(c >= 2 for c in cards), f"synthetic.cardinalities must be >= 2, got {s.cardinalities}")
    need(isinstance(s.cardinalities, int) or len(s.cardinalities) == 26,
         f"synthetic.cardinalities needs 26 entries, got {len(cards)}")
    need(isinstance(m.table_rows, int) or len(m.table_rows) == 26,
         f"model.table_rows needs 26 entries (or one cap), got {len(rows)}")
    need(s.zipf > 0, f"synthetic.zipf must be positive, got {s.zipf}")
    need(0 < s.base_ctr < 1, f"synthetic.base_ctr must be in (0, 1), got {s.base_ctr}")
    need(s.latent_dim >= 1, f"synthetic.latent_dim must be >= 1, got {s.latent_dim}")
    if s.world:
        from dlrm_jax.data.world import load_world
        load_world(s.world)  # a missing or malformed world file is bad input now, not mid-run
    need(cfg.data.source == "synthetic" or cfg.data.source.startswith("criteo:"),
         f"data.source must be 'synthetic' or 'criteo:DATA_DIR', got {cfg.data.source!r}")
    need(cfg.checkpoint.every_examples >= 0,
         f"checkpoint.every_examples must be >= 0, got {cfg.checkpoint.every_examples}")
    need(cfg.checkpoint.keep >= 1, f"checkpoint.keep must be >= 1, got {cfg.checkpoint.keep}")


# --------------------------------------------------------------------------- keys

def all_keys() -> list[str]:
    return [k for k, _ in flatten(Config().to_dict())]


def field_type(key: str) -> tuple[Any, str | None]:
    """(type, group) of a dotted key; UserError naming the closest key if there is none."""
    hints = typing.get_type_hints(Config)
    parts = key.split(".")
    if len(parts) == 1 and parts[0] in hints and not dataclasses.is_dataclass(hints[parts[0]]):
        return hints[parts[0]], None
    if len(parts) == 2 and parts[0] in hints and dataclasses.is_dataclass(hints[parts[0]]):
        sub = typing.get_type_hints(hints[parts[0]])
        if parts[1] in sub:
            return sub[parts[1]], parts[0]
    close = difflib.get_close_matches(key, all_keys(), n=1)
    raise UserError(f"unknown config key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


# Keys that say where a run computes, not what it computes: a run may resume on
# another mesh (checkpoints restore onto any placement), so these may change.
PLACEMENT_KEYS = ("mesh.", "distributed.", "embedding.sharding", "embedding.replicate_below_rows",
                  "embedding.exchange_headroom", "embedding.bag_exchange", "embedding.backend",
                  "embedding.tensorcore_below_rows")
# Keys that say how to resume, not what to compute: `--restart-if-unreadable` is
# given to the rerun that needs it, so a run dir accepts it changed.
RESUME_KEYS = ("checkpoint.restart_if_unreadable",)


def diff(a: Config, b: Config, ignore: tuple[str, ...] = PLACEMENT_KEYS + RESUME_KEYS) -> list[str]:
    """Dotted keys whose values differ between two configs, except those starting with `ignore`."""
    fa, fb = dict(flatten(a.to_dict())), dict(flatten(b.to_dict()))
    return [k for k, v in fb.items() if fa.get(k) != v and not k.startswith(ignore)]


def dumps(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=False)
