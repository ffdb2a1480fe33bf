"""DCNv2 and Wukong interactions against direct NumPy evaluations of their formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlrm_jax import config as C
from dlrm_jax.model import dlrm as M
from dlrm_jax.model.interactions import REGISTRY, dcn, wukong


def _randomize(params, seed=1):
    """Replace every parameter (zero biases, unit layer-norm scales included) by random values,
    so a reference that ignores a term cannot agree by accident."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("rank", [0, 3])
def test_cross_net_equals_the_dcn_v2_formula(rank):
    b, n, layers = 4, 10, 3
    x0 = np.random.default_rng(0).normal(size=(b, n)).astype(np.float32)
    net = dcn.CrossNet(layers=layers, rank=rank)
    p = _randomize(net.init(jax.random.PRNGKey(0), x0)["params"])
    out = np.asarray(net.apply({"params": p}, x0))
    x = x0.astype(np.float64)
    for layer in range(layers):
        bias = np.asarray(p[f"bias_{layer}"], np.float64)
        if rank:
            V, W = np.asarray(p[f"v_{layer}"], np.float64).T, np.asarray(p[f"w_{layer}"], np.float64).T  # r x N, N x r
            assert V.shape == (rank, n) and W.shape == (n, rank)
            inner = np.stack([W @ (V @ xb) for xb in x]) + bias
        else:
            W = np.asarray(p[f"w_{layer}"], np.float64).T
            inner = np.stack([W @ xb for xb in x]) + bias
        x = x0 * inner + x
    np.testing.assert_allclose(out, x, rtol=2e-5, atol=2e-5)


def test_cross_net_initialisation_is_xavier_normal_with_zero_bias():
    n, r = 300, 40
    p = dcn.CrossNet(layers=1, rank=r).init(jax.random.PRNGKey(0), jnp.zeros((1, n)))["params"]
    assert not np.any(np.asarray(p["bias_0"]))
    for name in ("v_0", "w_0"):
        assert np.std(np.asarray(p[name])) == pytest.approx(np.sqrt(2.0 / (n + r)), rel=0.05)


def _layer_norm(x, scale, bias, eps=wukong.LAYER_NORM_EPS):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


@pytest.mark.parametrize("n_f, n_l", [(3, 4), (2, 4)])   # 7 = n: identity residual; 6: projected
def test_wukong_layer_equals_the_papers_equations(n_f, n_l):
    b, n, d, k = 3, 7, 5, 2
    x = np.random.default_rng(0).normal(size=(b, n, d)).astype(np.float32)
    layer = wukong.WukongLayer(n_f=n_f, n_l=n_l, k=k, mlp=(6,))
    p = _randomize(layer.init(jax.random.PRNGKey(0), x)["params"])
    out = np.asarray(layer.apply({"params": p}, x))
    assert out.shape == (b, n_f + n_l, d)
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    want = []
    for X in x.astype(np.float64):                                       # X [n, d]
        fm = (X @ X.T @ P["fm_projection"]).reshape(-1)                   # (X X^T) Y, flattened [n k]
        h = _layer_norm(fm, P["fmb_norm"]["scale"], P["fmb_norm"]["bias"])
        h = np.maximum(h @ P["fmb_mlp"]["dense_0"]["kernel"] + P["fmb_mlp"]["dense_0"]["bias"], 0)
        h = h @ P["fmb_mlp"]["dense_1"]["kernel"] + P["fmb_mlp"]["dense_1"]["bias"]
        fmb = h.reshape(n_f, d)
        lcb = P["lcb"] @ X                                                # [n_L, d]
        res = X if n_f + n_l == n else P["residual_projection"] @ X
        want.append(_layer_norm(np.concatenate([fmb, lcb]) + res, P["norm"]["scale"], P["norm"]["bias"]))
    np.testing.assert_allclose(out, np.stack(want), rtol=2e-4, atol=2e-4)
    assert ("residual_projection" in p) == (n_f + n_l != n)


@pytest.mark.parametrize("overrides", [
    ["model.interaction=dcn"], ["model.interaction=dcn", "model.dcn_rank=4", "model.dcn_layers=2"],
    ["model.interaction=wukong"], ["model.interaction=wukong", "model.wukong_layers=0"],
    ["model.interaction=wukong", "model.wukong_layers=3", "model.wukong_nf=5", "model.wukong_nl=3",
     "model.wukong_mlp=16,8"],
])
def test_dlrm_forward_shapes_and_over_arch_width(overrides):
    cfg = C.load_config("tiny", overrides)
    m = M.from_config(cfg.model)
    dense, emb = jnp.ones((5, 13)), jnp.ones((5, 26, cfg.model.embed_dim))
    params = m.init(jax.random.PRNGKey(0), dense, emb)["params"]
    logits = m.apply({"params": params}, dense, emb)
    assert logits.shape == (5,) and np.all(np.isfinite(logits))
    width = REGISTRY[cfg.model.interaction].width(cfg.model, 26)
    assert params["over_arch"]["dense_0"]["kernel"].shape[0] == width
    mc = cfg.model
    if mc.interaction == "dcn":
        assert width == 27 * mc.embed_dim
    else:
        assert width == (mc.wukong_nf + mc.wukong_nl) * mc.embed_dim if mc.wukong_layers else 27 * mc.embed_dim


def test_bad_interaction_knobs_are_rejected():
    for bad in ("model.dcn_rank=-1", "model.wukong_nf=0", "model.wukong_fmb_k=0", "model.dcn_layers=-2"):
        with pytest.raises(C.UserError, match=bad.split("=")[0]):
            C.load_config("tiny", ["model.interaction=dcn", bad])
    with pytest.raises(C.UserError, match="model.interaction"):
        C.load_config("tiny", ["model.interaction=dcnv3"])
