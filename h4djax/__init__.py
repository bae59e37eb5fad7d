"""h4djax: a JAX-native, differentiable re-implementation of the Harmony4D multi-view annotation pipeline."""

__version__ = "0.1.0"
