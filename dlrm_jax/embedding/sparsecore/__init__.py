"""The SparseCore backend (TPU SparseCores through jax-tpu-embedding), its layout and its conversions."""
