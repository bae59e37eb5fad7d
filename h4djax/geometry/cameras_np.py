"""numpy twins of `h4djax.geometry.cameras` for host-side code (io, detect, plotting), float64 throughout.

Same conventions and names with ``_np``: ``project_np``, ``world_to_camera_np``, ``undistort_points_np``,
``camera_centers_np``. They accept a ``Cameras`` with numpy or JAX leaves and return numpy arrays.
"""

from __future__ import annotations

import numpy as np

from h4djax.geometry.cameras import MIN_DEPTH, UNDISTORT_ITERS, Cameras


def _leaves(cams: Cameras):
    return (
        np.asarray(cams.K, np.float64), np.asarray(cams.dist, np.float64), np.asarray(cams.R, np.float64),
        np.asarray(cams.t, np.float64), np.asarray(cams.fisheye, bool),
    )


def world_to_camera_np(cams: Cameras, X: np.ndarray) -> np.ndarray:
    """[cams, *batch, 3] camera coordinates (metres) of world points X [*batch, 3]."""
    _, _, R, t, _ = _leaves(cams)
    X = np.asarray(X, np.float64)
    flat = X.reshape(-1, 3)
    out = np.einsum("cij,nj->cni", R, flat) + t[:, None, :]
    return out.reshape((R.shape[0],) + X.shape[:-1] + (3,))


def _distort_np(dist: np.ndarray, fisheye: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """dist [cams,8], fisheye [cams], xy [cams,N,2] normalized -> distorted normalized [cams,N,2]."""
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    d = [dist[:, i : i + 1] for i in range(8)]
    k1, k2, p1, p2, k3, k4, k5, k6 = d
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xo = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yo = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    r = np.sqrt(r2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(r > 1e-8, np.arctan(r) / np.where(r > 1e-8, r, 1.0), 1.0 - r2 / 3.0)
    th2 = ratio * ratio * r2
    fk1, fk2, fk3, fk4 = dist[:, 0:1], dist[:, 1:2], dist[:, 2:3], dist[:, 3:4]
    scale = ratio * (1 + th2 * (fk1 + th2 * (fk2 + th2 * (fk3 + th2 * fk4))))
    fe = fisheye[:, None]
    return np.stack([np.where(fe, x * scale, xo), np.where(fe, y * scale, yo)], axis=-1)


def project_np(cams: Cameras, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uv [cams, *batch, 2] pixels, in_front [cams, *batch]) of world points X [*batch, 3] (metres)."""
    K, dist, _, _, fe = _leaves(cams)
    X = np.asarray(X, np.float64)
    Xc = world_to_camera_np(cams, X).reshape(K.shape[0], -1, 3)
    z = Xc[..., 2]
    in_front = z > MIN_DEPTH
    xy = Xc[..., :2] / np.where(in_front, z, 1.0)[..., None]
    xyd = _distort_np(dist, fe, xy)
    u = K[:, None, 0, 0] * xyd[..., 0] + K[:, None, 0, 1] * xyd[..., 1] + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * xyd[..., 1] + K[:, None, 1, 2]
    batch = X.shape[:-1]
    return np.stack([u, v], -1).reshape((K.shape[0],) + batch + (2,)), in_front.reshape((K.shape[0],) + batch)


def undistort_points_np(cams: Cameras, uv: np.ndarray, iters: int = UNDISTORT_ITERS) -> np.ndarray:
    """Undistorted normalized coordinates [cams, *batch, 2] of pixels uv [cams, *batch, 2] (Newton, as the JAX
    version; the Jacobian here is by central differences of the forward model, an independent route)."""
    K, dist, _, _, fe = _leaves(cams)
    uv = np.asarray(uv, np.float64)
    n = K.shape[0]
    p = uv.reshape(n, -1, 2)
    yd = (p[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
    xd = (p[..., 0] - K[:, None, 0, 2] - K[:, None, 0, 1] * yd) / K[:, None, 0, 0]
    target = np.stack([xd, yd], -1)
    x = target.copy()
    h = 1e-7
    for _ in range(iters):
        f = _distort_np(dist, fe, x) - target
        J = np.empty(x.shape + (2,))
        for j in range(2):
            e = np.zeros(2)
            e[j] = h
            J[..., :, j] = (_distort_np(dist, fe, x + e) - _distort_np(dist, fe, x - e)) / (2 * h)
        det = J[..., 0, 0] * J[..., 1, 1] - J[..., 0, 1] * J[..., 1, 0]
        ok = np.abs(det) > 1e-12
        det = np.where(ok, det, 1.0)
        dx0 = (J[..., 1, 1] * f[..., 0] - J[..., 0, 1] * f[..., 1]) / det
        dx1 = (-J[..., 1, 0] * f[..., 0] + J[..., 0, 0] * f[..., 1]) / det
        x = np.where(ok[..., None], x - np.stack([dx0, dx1], -1), x - f)
    return x.reshape(uv.shape)


def camera_centers_np(cams: Cameras) -> np.ndarray:
    """Camera centres [cams, 3] in world coordinates (metres)."""
    R = np.asarray(cams.R, np.float64)
    return -np.einsum("cji,cj->ci", R, np.asarray(cams.t, np.float64))
