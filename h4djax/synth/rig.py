"""Synthetic camera rigs like Harmony4D's: N static GoPros roughly equidistant around a 4-6 m arena.

Harmony4D (PIPELINE.md 2) films with 20+ GoPros on tripods around the arena, calibrated with COLMAP's
OPENCV_FISHEYE model; GoPro "linear" mode footage is well described by the OpenCV radial-tangential model instead.
A synthetic rig mixes both, in 4K and 1080p, with the small irregularities of a hand-set rig (azimuth, distance,
height, aim and roll jitter) so that no two cameras are exactly symmetric.

World frame: SMPL's (y up, metres), floor at y = 0, arena centred on the origin. Cameras follow OpenCV
(x right, y down, z forward), ``x_cam = R @ x_world + t``.
"""

from __future__ import annotations

import numpy as np

from h4djax.errors import ConfigError
from h4djax.geometry import Cameras
from h4djax.synth.config import RigConfig

__all__ = ["make_rig", "look_at", "MIN_CAMERAS", "MAX_CAMERAS"]

MIN_CAMERAS = 2
MAX_CAMERAS = 64
_UP = np.array([0.0, 1.0, 0.0])


def look_at(center: np.ndarray, target: np.ndarray, roll: np.ndarray | float = 0.0) -> np.ndarray:
    """World -> camera rotations [n, 3, 3] of cameras at `center` [n, 3] aiming at `target` [n, 3] (or [3]) with
    the image "up" as close as possible to world +y, then rolled by `roll` [n] radians about the optical axis."""
    center = np.atleast_2d(center)
    fwd = np.broadcast_to(target, center.shape) - center
    fwd = fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)
    # OpenCV: image y points down, so the camera y axis is world "down" made orthogonal to the optical axis.
    down = -_UP - np.sum(-_UP * fwd, -1, keepdims=True) * fwd
    down = down / np.linalg.norm(down, axis=-1, keepdims=True)
    right = np.cross(down, fwd)  # x = y cross z for a right-handed camera frame
    R = np.stack([right, down, fwd], axis=-2)
    roll = np.broadcast_to(np.asarray(roll, np.float64), center.shape[:1])
    c, s = np.cos(roll), np.sin(roll)
    Rz = np.zeros((len(roll), 3, 3))
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
    return Rz @ R


def _fisheye_theta_d(theta: np.ndarray, k: np.ndarray) -> np.ndarray:
    t2 = theta * theta
    return theta * (1 + t2 * (k[..., 0] + t2 * (k[..., 1] + t2 * (k[..., 2] + t2 * k[..., 3]))))


def _ring_positions(cfg: RigConfig, rng: np.random.Generator) -> np.ndarray:
    n = cfg.num_cameras
    base_r = cfg.arena_size / 2.0 + cfg.radius_margin
    if cfg.layout == "ring":
        rings = np.zeros(n, np.int64)
        counts = np.array([n])
        heights = np.array([cfg.height])
        radii = np.array([base_r])
    elif cfg.layout == "dome":
        nr = max(1, min(cfg.dome_rings, n))
        elev = np.deg2rad(np.linspace(0.0, cfg.dome_max_elevation_deg, nr))
        # Upper rings sit closer (on a dome around the look-at point) and hold fewer cameras (smaller circles).
        radii = base_r * np.cos(elev)
        heights = np.where(elev > 0, cfg.look_at_height + base_r * np.sin(elev), cfg.height)
        heights = np.maximum(heights, cfg.height)
        share = radii / radii.sum()
        counts = np.floor(share * n).astype(np.int64)
        counts[0] += n - counts.sum()
        rings = np.repeat(np.arange(nr), counts)
    else:
        raise ConfigError(f"rig.layout: unknown layout {cfg.layout!r}; use 'ring' or 'dome'")
    # Equidistant azimuths per ring; upper rings are staggered by half a step so views interleave.
    az = np.concatenate([2 * np.pi * (np.arange(c) + 0.5 * r) / max(c, 1) for r, c in enumerate(counts)])
    az = az + np.deg2rad(cfg.azimuth_jitter_deg) * rng.standard_normal(n)
    rad = radii[rings] + cfg.radius_jitter * rng.standard_normal(n)
    hgt = heights[rings] + cfg.height_jitter * rng.standard_normal(n)
    # Azimuth 0 = +z (in front of a subject facing +z), counter-clockwise seen from above.
    return np.stack([rad * np.sin(az), hgt, rad * np.cos(az)], -1)


def make_rig(cfg: RigConfig, rng: np.random.Generator) -> Cameras:
    """A random rig following `cfg` (host-side `Cameras` with numpy float64 leaves), names cam01..camNN.

    Raises ConfigError naming the field for a camera count outside [2, 64] or an unknown layout.
    """
    n = cfg.num_cameras
    if not MIN_CAMERAS <= n <= MAX_CAMERAS:
        raise ConfigError(f"rig.num_cameras: {n} is outside [{MIN_CAMERAS}, {MAX_CAMERAS}]")
    if not 0.0 <= cfg.fisheye_fraction <= 1.0 or not 0.0 <= cfg.fraction_4k <= 1.0:
        raise ConfigError("rig.fisheye_fraction and rig.fraction_4k must lie in [0, 1]")
    if len(cfg.opencv_dist) != 5 or len(cfg.fisheye_dist) != 4:
        raise ConfigError("rig.opencv_dist needs 5 values (k1,k2,p1,p2,k3), rig.fisheye_dist 4 (k1..k4)")
    centers = _ring_positions(cfg, rng)
    target = np.array([0.0, cfg.look_at_height, 0.0]) + cfg.look_at_jitter * rng.standard_normal((n, 3)) * [1, 0.3, 1]
    R = look_at(centers, target, np.deg2rad(cfg.roll_jitter_deg) * rng.standard_normal(n))
    t = -np.einsum("nij,nj->ni", R, centers)

    # Which cameras are 4K / fisheye: exact shares, randomly placed around the ring.
    is4k = np.zeros(n, bool)
    is4k[rng.permutation(n)[: int(round(cfg.fraction_4k * n))]] = True
    fisheye = np.zeros(n, bool)
    fisheye[rng.permutation(n)[: int(round(cfg.fisheye_fraction * n))]] = True
    size = np.where(is4k[:, None], [3840, 2160], [1920, 1080]).astype(np.int64)

    def jit(nominal, shape):
        return np.asarray(nominal) * (1.0 + cfg.dist_jitter * rng.standard_normal(shape))

    d_cv = jit(cfg.opencv_dist, (n, 5))
    d_fe = jit(cfg.fisheye_dist, (n, 4))
    dist = np.zeros((n, 8))
    dist[:, :5] = np.where(fisheye[:, None], 0.0, d_cv)
    dist[:, :4] += np.where(fisheye[:, None], d_fe, 0.0)

    hfov = np.where(fisheye, cfg.hfov_fisheye_deg, cfg.hfov_opencv_deg) + cfg.hfov_jitter_deg * rng.standard_normal(n)
    half = np.deg2rad(hfov) / 2.0
    half_w = size[:, 0] / 2.0
    # Focal length that puts the horizontal half-FOV at the image edge under each camera's own lens model (the
    # OpenCV distortion is mild, so the pinhole relation is used for it).
    f_fe = half_w / _fisheye_theta_d(half, d_fe)
    f_cv = half_w / np.tan(half)
    f = np.where(fisheye, f_fe, f_cv)
    aspect = 1.0 + 0.001 * rng.standard_normal(n)  # GoPro pixels are square to calibration precision
    cx = size[:, 0] / 2.0 + cfg.principal_jitter * size[:, 0] * rng.standard_normal(n)
    cy = size[:, 1] / 2.0 + cfg.principal_jitter * size[:, 0] * rng.standard_normal(n)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f * aspect, cx, cy, 1.0
    names = tuple(f"cam{i + 1:02d}" for i in range(n))
    return Cameras(K=K, dist=dist, R=R, t=t, size=size, fisheye=fisheye, names=names)
