from dlrm_jax.cli import entry

entry()
