"""magnet-jax: MagNet (Huynh et al., CVPR 2021) progressive semantic segmentation in JAX/Flax."""

__version__ = "0.1.0"
