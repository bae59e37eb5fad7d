"""Import h4djax before any test module imports jax, so its XLA flag workaround (h4djax/__init__.py) applies."""

import h4djax  # noqa: F401
