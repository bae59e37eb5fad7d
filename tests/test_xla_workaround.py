"""Regression: jaxlib 0.10.2's CPU YNN fusion corrupted projections of > ~11k points per camera (off by ~1,700 px
before the workaround in h4djax/__init__.py)."""

import numpy as np
import jax.numpy as jnp

from h4djax.geometry.cameras import from_numpy, project, to_numpy
from h4djax.geometry.cameras_np import project_np


def test_large_batch_projection_matches_numpy():
    rng = np.random.default_rng(0)
    K = np.array([[[1000, 0, 960], [0, 1000, 540], [0, 0, 1.0]]] * 3)
    cams = from_numpy(K, np.zeros((3, 5)), np.stack([np.eye(3)] * 3), np.array([[0, 0, 5.0]] * 3),
                      np.array([[1920, 1080]] * 3), False, ["a", "b", "c"], dtype=jnp.float32)
    X = rng.normal(size=(20000, 3)).astype(np.float32)
    uv, _ = project(cams, jnp.asarray(X))
    ref, _ = project_np(to_numpy(cams), X.astype(np.float64))
    assert np.abs(np.asarray(uv) - ref).max() < 1e-2
