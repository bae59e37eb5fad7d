"""Geometry: the `Cameras` pytree with JAX projection / undistortion (cameras.py) and numpy twins (cameras_np.py)."""

from h4djax.geometry.cameras import (
    MIN_DEPTH,
    UNDISTORT_ITERS,
    Cameras,
    camera_centers,
    from_numpy,
    project,
    project_one,
    to_jax,
    to_numpy,
    undistort_one,
    undistort_points,
    world_to_camera,
    world_to_camera_one,
)

__all__ = [
    "MIN_DEPTH",
    "UNDISTORT_ITERS",
    "Cameras",
    "camera_centers",
    "from_numpy",
    "project",
    "project_one",
    "to_jax",
    "to_numpy",
    "undistort_one",
    "undistort_points",
    "world_to_camera",
    "world_to_camera_one",
]
