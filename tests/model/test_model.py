import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlrm_jax import config as C
from dlrm_jax.config import ModelConfig
from dlrm_jax.model import dlrm as M
from dlrm_jax.model.interactions import REGISTRY, dot


def test_dot_interaction_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x, e = rng.normal(size=(3, 4)), rng.normal(size=(3, 5, 4))
    out = np.asarray(dot.dot_interaction(jnp.asarray(x, jnp.float32), jnp.asarray(e, jnp.float32)))
    t = np.concatenate([x[:, None], e], 1)
    want = [np.concatenate([x[b], [t[b, i] @ t[b, j] for i in range(6) for j in range(i)]]) for b in range(3)]
    np.testing.assert_allclose(out, np.array(want), rtol=1e-5, atol=1e-6)
    assert out.shape[1] == REGISTRY["dot"].width(ModelConfig(embed_dim=4), 5) == 4 + 15


def test_pairwise_dots_gradient_equals_autodiff_of_the_plain_formula():
    t = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 15))
    li, lj = np.tril_indices(6, k=-1)

    def plain(t):
        return jnp.einsum("bid,bjd->bij", t, t)[:, li, lj]

    def loss(f):
        return lambda t: jnp.sum(jnp.sin(f(t)) * w)
    np.testing.assert_allclose(dot.pairwise_dots(t), plain(t), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(loss(dot.pairwise_dots))(t), jax.grad(loss(plain))(t), rtol=1e-5, atol=1e-6)
    # The gradient is also right inside jit and vmap (custom_vjp rules compose).
    batched = jax.vmap(jax.grad(loss(dot.pairwise_dots)))(jnp.stack([t, 2 * t]))
    np.testing.assert_allclose(batched[1], jax.grad(loss(plain))(2 * t), rtol=1e-5, atol=1e-5)


def test_cat_interaction_and_logit_shape():
    cfg = ModelConfig(embed_dim=4, bottom_mlp=(8,), top_mlp=(8,), interaction="cat")
    m = M.DLRM(cfg)
    dense, emb = jnp.ones((5, 13)), jnp.ones((5, 26, 4))
    params = m.init(jax.random.PRNGKey(0), dense, emb)
    assert m.apply(params, dense, emb).shape == (5,)
    kernel = params["params"]["over_arch"]["dense_0"]["kernel"]
    assert kernel.shape == (REGISTRY["cat"].width(cfg, 26), 8) == (27 * 4, 8)


def _layer(prefix, *names):
    return {f"{prefix}/{n}/{p}" for n in names for p in ("bias", "kernel")}


_WUKONG_LAYER = ({"fm_projection", "lcb", "fmb_norm/bias", "fmb_norm/scale", "norm/bias", "norm/scale"}
                 | _layer("fmb_mlp", "dense_0", "dense_1"))


@pytest.mark.parametrize("overrides, interaction", [
    ([], set()),
    (["model.interaction=cat"], set()),
    (["model.interaction=dcn", "model.dcn_layers=1"], {"bias_0", "w_0"}),
    (["model.interaction=dcn", "model.dcn_rank=4", "model.dcn_layers=2"],
     {"bias_0", "bias_1", "v_0", "v_1", "w_0", "w_1"}),
    # tiny: n = 27 embeddings in, n_F + n_L = 16 out, so only layer 0 projects its residual
    (["model.interaction=wukong"], {f"layer_0/{p}" for p in _WUKONG_LAYER | {"residual_projection"}}
     | {f"layer_1/{p}" for p in _WUKONG_LAYER}),
])
def test_parameter_names_are_those_checkpoints_hold(overrides, interaction):
    # Checkpoints of earlier runs are restored by these names (tests/run/test_old_run_dir.py).
    cfg = C.load_config("tiny", overrides).model
    shapes = jax.eval_shape(M.from_config(cfg).init, jax.random.PRNGKey(0), jnp.ones((2, 13)),
                            jnp.ones((2, 26, cfg.embed_dim)))["params"]
    paths = {"/".join(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    assert paths == (_layer("dense_arch", "dense_0", "dense_1") | _layer("over_arch", "dense_0", "dense_1")
                     | {f"interaction/{p}" for p in interaction})
