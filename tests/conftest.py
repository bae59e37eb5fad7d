"""Import h4djax before any test module imports jax, so its XLA flag workaround (h4djax/__init__.py) applies."""

import h4djax  # noqa: F401

import jax
import pytest


@pytest.fixture(autouse=True)
def _restore_x64_flag():
    """Whatever a test does to ``jax_enable_x64`` is undone after it, so float64 never leaks from one test module
    into the next (modules that check float64 exactness scope it with ``jax.enable_x64(True)`` fixtures)."""
    prev = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", prev)
