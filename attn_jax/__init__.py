"""attn_jax: attention and vision transformers in JAX/Flax."""
