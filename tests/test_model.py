import jax
import jax.numpy as jnp
import numpy as np

from dlrm_jax import model as M


def test_dot_interaction_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x, e = rng.normal(size=(3, 4)), rng.normal(size=(3, 5, 4))
    out = np.asarray(M.dot_interaction(jnp.asarray(x, jnp.float32), jnp.asarray(e, jnp.float32)))
    t = np.concatenate([x[:, None], e], 1)
    want = [np.concatenate([x[b], [t[b, i] @ t[b, j] for i in range(6) for j in range(i)]]) for b in range(3)]
    np.testing.assert_allclose(out, np.array(want), rtol=1e-5, atol=1e-6)
    assert out.shape[1] == M.interaction_width("dot", 5, 4) == 4 + 15


def test_triangle_gradient_equals_plain_gather_gradient():
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6))
    w = jax.random.normal(jax.random.PRNGKey(1), (2, 15))
    li, lj = np.tril_indices(6, k=-1)
    plain = jax.grad(lambda z: jnp.sum(jnp.sin(z[:, li, lj]) * w))(z)
    custom = jax.grad(lambda z: jnp.sum(jnp.sin(M.strict_lower_triangle(z)) * w))(z)
    np.testing.assert_allclose(custom, plain, rtol=1e-6)
    assert float(jnp.abs(custom[:, lj, li]).max()) == 0.0  # upper triangle gets no gradient


def test_cat_interaction_and_logit_shape():
    m = M.DLRM(embed_dim=4, bottom_mlp=(8,), top_mlp=(8,), interaction="cat")
    dense, emb = jnp.ones((5, 13)), jnp.ones((5, 26, 4))
    params = m.init(jax.random.PRNGKey(0), dense, emb)
    assert m.apply(params, dense, emb).shape == (5,)
    assert params["params"]["over_arch"]["dense_0"]["kernel"].shape == (M.interaction_width("cat", 26, 4), 8)
