"""An architecture is one unit: a fifth interaction, defined here and registered with one
call, trains through the real `train()`, is counted by the accounting and planned by the
architecture sweep; unknown names are one line naming the registered ones."""
import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dlrm_jax import config as C
from dlrm_jax.cli import main
from dlrm_jax.errors import UserError
from dlrm_jax.model import accounting, dlrm as M, interactions
from dlrm_jax.model.interactions import REGISTRY, Interaction, dot
from dlrm_jax.model.layers import mlp_counts
from dlrm_jax.train import train

REPO = Path(__file__).resolve().parents[2]


# -- the fifth interaction: everything it needs is in this block ------------------------

class FieldWeightedFM(nn.Module):
    """x [B, D], emb [B, F, D] -> [B, D + 1]: x, then a factorization machine's sum over
    pairs, sum_{i<j} w_i w_j <t_i, t_j> of the N = F + 1 vectors t = [x, e_1, ..., e_F]
    (Rendle 2010), in O(N D) as ((sum w t)^2 - sum (w t)^2) / 2; w [N] learned, from 1."""

    @nn.compact
    def __call__(self, x, emb):
        t = jnp.concatenate([x[:, None, :], emb], axis=1)                   # [B, N, D]
        w = self.param("field_weight", nn.initializers.ones, (t.shape[1],), jnp.float32)
        v = t * w.astype(t.dtype)[None, :, None]
        s = v.sum(axis=1)
        pairs = 0.5 * (jnp.sum(s * s, axis=-1) - jnp.sum(v * v, axis=(1, 2)))
        return jnp.concatenate([x, pairs[:, None]], axis=1)


def _fm_counts(model_cfg, num_sparse):
    n, d = num_sparse + 1, model_cfg.embed_dim
    return n, 4 * n * d          # w; the weighted sum and the sum of squares, 2 FLOPs a multiply-add


FM = Interaction("fm", module=lambda model_cfg, dtype, name: FieldWeightedFM(name=name),
                 width=lambda model_cfg, num_sparse: model_cfg.embed_dim + 1, counts=_fm_counts)

# ---------------------------------------------------------------------------------------


@contextmanager
def registered(spec):
    interactions.register(spec)
    try:
        yield spec
    finally:
        interactions.unregister(spec.name)


@pytest.fixture
def fm():
    with registered(FM) as spec:
        yield spec
    assert "fm" not in REGISTRY and "fm" not in interactions.names()


def test_the_fm_module_is_the_sum_over_pairs():
    x, emb = jax.random.normal(jax.random.PRNGKey(0), (3, 4)), jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4))
    params = {"field_weight": jnp.arange(1.0, 7.0)}
    out = FieldWeightedFM().apply({"params": params}, x, emb)
    t = jnp.concatenate([x[:, None], emb], 1) * params["field_weight"][None, :, None]
    np.testing.assert_allclose(out[:, :4], x)
    np.testing.assert_allclose(out[:, 4], dot.pairwise_dots(t).sum(-1), rtol=1e-5, atol=1e-5)


def test_a_registered_interaction_trains_and_is_counted(fm, tmp_path):
    cfg = C.load_config("tiny", ["mesh.data=1", "model.interaction=fm", "eval.examples=2**12"])
    summary = train(cfg, tmp_path / "fm", progress=False, verbose=False)
    assert summary["status"] == "done"
    assert np.isfinite(summary["eval_ne"]) and summary["bayes_ne"] < summary["eval_ne"] < 1.0
    losses = [x["train_loss"] for x in map(json.loads, (tmp_path / "fm" / "metrics.jsonl").read_text().splitlines())
              if "train_loss" in x]
    assert len(losses) >= 4 and np.mean(losses[-2:]) < np.mean(losses[:2])

    # The accounting took the interaction's own counts and width (over arch fan-in D + 1) ...
    m, d = cfg.model, cfg.model.embed_dim
    bottom_p, bottom_f = mlp_counts([13, *m.bottom_mlp, d])
    top_p, top_f = mlp_counts([d + 1, *m.top_mlp, 1])
    assert accounting.interaction_counts(m) == (27, 4 * 27 * d)
    assert summary["params_dense"] == bottom_p + 27 + top_p
    assert summary["flops_per_example"] == 3 * (bottom_f + 4 * 27 * d + top_f)
    # ... and they are what Flax allocates, under the name checkpoints use.
    params = M.from_config(m).init(jax.random.PRNGKey(0), jnp.ones((2, 13)), jnp.ones((2, 26, d)))["params"]
    assert params["interaction"]["field_weight"].shape == (27,)
    assert sum(x.size for x in jax.tree.leaves(params)) == summary["params_dense"]


def test_the_architecture_sweep_plans_a_registered_interaction(fm):
    from sweeps import architecture
    pts = architecture.points(C.load_config("small"))
    mine = [p for p in pts if p["model.interaction"] == "fm"]
    assert len(pts) == 60 and len(mine) == 12
    # No size knob of its own (Interaction's default): the sweep scales only the over arch.
    assert {tuple(sorted(p)) for p in mine} == {("model.interaction", "model.top_mlp", "train.examples")}
    assert sorted({p["model.top_mlp"] for p in mine}) == [(32, 16), (64, 32), (128, 64)]


def test_register_refuses_a_taken_name_and_unregister_a_builtin_one():
    with pytest.raises(ValueError, match="already registered"):
        interactions.register(Interaction("dcn", module=FM.module, width=FM.width, counts=FM.counts))
    with pytest.raises(ValueError, match="built in"):
        interactions.unregister("dot")
    with registered(FM):
        assert interactions.names() == ("dot", "cat", "dcn", "wukong", "fm")
    assert interactions.names() == ("dot", "cat", "dcn", "wukong")
    with pytest.raises(UserError, match="model.interaction must be dot, cat, dcn or wukong, got 'fm'"):
        C.load_config("tiny", ["model.interaction=fm"])


def test_an_unregistered_name_exits_2_naming_the_registered_ones(tmp_path, capsys):
    def refused(name):
        code = main(["train", "--preset", "tiny", "--set", f"model.interaction={name}", "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and not (tmp_path / "r").exists(), err
        return err

    assert refused("fm").endswith("model.interaction must be dot, cat, dcn or wukong, got 'fm'")
    assert refused("dcnv2").endswith("model.interaction must be dot, cat, dcn or wukong, got 'dcnv2' "
                                     "(did you mean 'dcn'?)")
    with registered(FM):
        assert refused("fmm").endswith("model.interaction must be dot, cat, dcn, wukong or fm, got 'fmm' "
                                       "(did you mean 'fm'?)")


def test_config_the_names_and_an_unknown_name_need_no_jax():
    # config.py imports the registry for the names; the interactions' modules (Flax code and
    # knob checks together) load on first lookup, after the name check.
    code = ("import sys; sys.modules['jax'] = sys.modules['flax'] = None\n"
            "from dlrm_jax import config\n"
            "from dlrm_jax.model import interactions\n"
            "assert interactions.names() == ('dot', 'cat', 'dcn', 'wukong')\n"
            "cfg = config.Config(model=config.ModelConfig(interaction='nope'))\n"
            "try:\n"
            "    config.validate(cfg)\n"
            "except config.UserError as e:\n"
            "    assert str(e) == \"model.interaction must be dot, cat, dcn or wukong, got 'nope'\", e\n"
            "else:\n"
            "    raise AssertionError('accepted')\n"
            "bad = [m for m in sys.modules if m.startswith(('jax', 'flax')) and sys.modules[m] is not None]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
