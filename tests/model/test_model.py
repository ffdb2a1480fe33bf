import jax
import jax.numpy as jnp
import numpy as np

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

    loss = lambda f: lambda t: jnp.sum(jnp.sin(f(t)) * w)
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
    assert params["params"]["over_arch"]["dense_0"]["kernel"].shape == (REGISTRY["cat"].width(cfg, 26), 8) == (27 * 4, 8)
