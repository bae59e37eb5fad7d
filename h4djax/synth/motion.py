"""Keyframe motion for synthetic captures: quaternion splines, forward kinematics of rotations, two-bone IK.

Host-side numpy (float64), vectorized over frames and joints: the generator evaluates every frame of every joint
with array operations (no Python loop over frames).

Interpolation (`interpolate_rotations`): keyframed joint rotations become a C1 curve on SO(3) by Shoemake's
quaternion Bezier construction ("Animating rotation with quaternion curves", SIGGRAPH 1985): each segment is a cubic
Bezier evaluated by de Casteljau with slerp instead of lerp, its inner control points set from Catmull-Rom-like
angular velocities (the log-differences to the neighbouring keyframes divided by the intervals, averaged with weight
on the smaller one and zero at reversals, so holds do not overshoot), so angular velocity is continuous across
keyframes even with uneven keyframe timing. The end keyframes have zero velocity (motion starts and ends at rest).
"slerp" mode is piecewise slerp with smoothstep easing (zero velocity at every keyframe). Positions use the matching
monotone cubic Hermite spline (Fritsch-Carlson tangents).

Quaternions are (w, x, y, z), scalar first, as `h4djax.geometry.rotations`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "aa_to_quat", "quat_to_aa", "quat_mul", "quat_conj", "quat_to_mat", "mat_to_quat", "aa_to_mat", "mat_to_aa",
    "slerp", "interpolate_rotations", "interpolate_positions", "global_rotations", "rotation_between",
    "two_bone_ik",
]

_EPS = 1e-12


def aa_to_quat(aa: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] -> unit quaternion [..., 4]."""
    aa = np.asarray(aa, np.float64)
    th = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * th
    # sin(t/2)/t with its Taylor series near 0 (no division by a zero angle).
    k = np.where(th > 1e-8, np.sin(half) / np.maximum(th, 1e-8), 0.5 - th * th / 48.0)
    return np.concatenate([np.cos(half), aa * k], -1)


def quat_to_aa(q: np.ndarray) -> np.ndarray:
    """Unit quaternion [..., 4] -> axis-angle [..., 3] with angle in [0, pi] (shortest rotation)."""
    q = np.asarray(q, np.float64)
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    th = 2.0 * np.arctan2(s, q[..., :1])
    k = np.where(s > 1e-8, th / np.maximum(s, 1e-8), 2.0 / np.maximum(q[..., :1], 1e-8))
    return v * k


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (rotate by b, then by a)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b), -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def quat_conj(q: np.ndarray) -> np.ndarray:
    return np.asarray(q) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> unit quaternions (Shepperd's method: divide by the largest component)."""
    R = np.asarray(R, np.float64)
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cand = np.stack([
        np.stack([1 + tr, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1),
        np.stack([R[..., 2, 1] - R[..., 1, 2], 1 + 2 * R[..., 0, 0] - tr, R[..., 0, 1] + R[..., 1, 0],
                  R[..., 0, 2] + R[..., 2, 0]], -1),
        np.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0], 1 + 2 * R[..., 1, 1] - tr,
                  R[..., 1, 2] + R[..., 2, 1]], -1),
        np.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1],
                  1 + 2 * R[..., 2, 2] - tr], -1),
    ], -2)  # row i is proportional to q with component i = (1 + ...) largest
    diag = np.stack([1 + tr, 1 + 2 * R[..., 0, 0] - tr, 1 + 2 * R[..., 1, 1] - tr, 1 + 2 * R[..., 2, 2] - tr], -1)
    i = np.argmax(diag, -1)
    q = np.take_along_axis(cand, i[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def aa_to_mat(aa: np.ndarray) -> np.ndarray:
    return quat_to_mat(aa_to_quat(aa))


def mat_to_aa(R: np.ndarray) -> np.ndarray:
    return quat_to_aa(mat_to_quat(R))


def _qlog(q: np.ndarray) -> np.ndarray:
    """Rotation vector of a unit quaternion without flipping the hemisphere (angles up to 2 pi)."""
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    th = 2.0 * np.arctan2(s, q[..., :1])
    k = np.where(s > 1e-8, th / np.maximum(s, 1e-8), 2.0 / np.where(np.abs(q[..., :1]) > 1e-8, q[..., :1], 1.0))
    return v * k


def slerp(q0: np.ndarray, q1: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; `u` broadcasts against q[..., 0]."""
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    q1 = np.where(np.sum(q0 * q1, -1, keepdims=True) < 0, -q1, q1)
    d = quat_mul(quat_conj(q0), q1)
    return quat_mul(q0, aa_to_quat(_qlog(d) * np.asarray(u)[..., None]))


def _align_hemispheres(q: np.ndarray) -> np.ndarray:
    """Flip signs along axis 0 so consecutive keyframe quaternions have a non-negative dot product (same rotation,
    shortest path), vectorized: a sign flips whenever the running product of pairwise signs is negative."""
    s = np.sign(np.sum(q[1:] * q[:-1], -1))
    s = np.where(s == 0, 1.0, s)
    cum = np.concatenate([np.ones_like(s[:1]), np.cumprod(s, axis=0)], 0)
    return q * cum[..., None]


def _segments(key_times: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key_times = np.asarray(key_times, np.float64)
    if key_times.ndim != 1 or len(key_times) < 1 or np.any(np.diff(key_times) <= 0):
        raise ValueError("keyframe times must be a strictly increasing 1D array")
    t = np.clip(np.asarray(times, np.float64), key_times[0], key_times[-1])
    if len(key_times) == 1:
        z = np.zeros(t.shape, np.int64)
        return z, np.zeros(t.shape), np.ones(t.shape)
    i = np.clip(np.searchsorted(key_times, t, side="right") - 1, 0, len(key_times) - 2)
    dt = key_times[i + 1] - key_times[i]
    return i, (t - key_times[i]) / dt, dt


def interpolate_rotations(
    key_times: np.ndarray, key_quats: np.ndarray, times: np.ndarray, mode: str = "spline"
) -> np.ndarray:
    """Quaternions [frames, ...] at `times` [frames] from keyframes `key_quats` [keys, ..., 4] at `key_times`
    [keys] (seconds). mode "spline" (C1 Bezier-slerp) or "slerp" (piecewise, eased)."""
    q = _align_hemispheres(np.asarray(key_quats, np.float64))
    n = len(q)
    i, u, dt = _segments(key_times, times)
    if n == 1:
        return np.broadcast_to(q[0], (len(i),) + q.shape[1:]).copy()
    extra = (None,) * (q.ndim - 2)
    if mode == "slerp":
        ue = u * u * (3.0 - 2.0 * u)  # smoothstep: zero velocity at the keyframes, continuous
        return slerp(q[i], q[i + 1], ue[(...,) + extra])
    if mode != "spline":
        raise ValueError(f"unknown interpolation mode {mode!r}; use 'spline' or 'slerp'")
    kt = np.asarray(key_times, np.float64)
    # Body-frame angular velocity at each keyframe (Catmull-Rom): mean of the neighbouring log-differences / dt.
    d = _qlog(quat_mul(quat_conj(q[:-1]), q[1:])) / np.diff(kt).reshape((-1,) + (1,) * (q.ndim - 1))
    omega = np.zeros(q.shape[:-1] + (3,))
    # Keyframe angular velocity: the neighbouring rates weighted towards the SMALLER one, and zero where the motion
    # reverses -- the rotation analogue of monotone (Fritsch-Carlson) tangents, so a hold between two equal
    # keyframes stays a hold instead of overshooting (plain Catmull-Rom would swing through it).
    a, b = d[:-1], d[1:]
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    w = (nb * a + na * b) / np.maximum(na + nb, 1e-12)
    omega[1:-1] = np.where(np.sum(a * b, -1, keepdims=True) > 0, w, 0.0)
    h = (dt / 3.0).reshape((-1,) + (1,) * (q.ndim - 1))
    b0 = q[i]
    b3 = q[i + 1]
    b1 = quat_mul(b0, aa_to_quat(omega[i] * h))
    b2 = quat_mul(b3, aa_to_quat(-omega[i + 1] * h))
    uu = u[(...,) + extra]
    # de Casteljau with slerp (Shoemake 1985).
    p01, p12, p23 = slerp(b0, b1, uu), slerp(b1, b2, uu), slerp(b2, b3, uu)
    return slerp(slerp(p01, p12, uu), slerp(p12, p23, uu), uu)


def interpolate_positions(
    key_times: np.ndarray, key_pos: np.ndarray, times: np.ndarray, mode: str = "spline"
) -> np.ndarray:
    """Positions [frames, ..., d] at `times` from keyframes [keys, ..., d]: cubic Hermite with Catmull-Rom
    tangents (zero at the ends) for "spline", eased linear for "slerp"."""
    p = np.asarray(key_pos, np.float64)
    i, u, dt = _segments(key_times, times)
    if len(p) == 1:
        return np.broadcast_to(p[0], (len(i),) + p.shape[1:]).copy()
    shape = (-1,) + (1,) * (p.ndim - 1)
    uu = u.reshape(shape)
    if mode == "slerp":
        ue = uu * uu * (3 - 2 * uu)
        return p[i] + ue * (p[i + 1] - p[i])
    kt = np.asarray(key_times, np.float64)
    v = np.diff(p, axis=0) / np.diff(kt).reshape(shape)
    m = np.zeros_like(p)
    # Monotone cubic tangents per coordinate (Fritsch & Carlson 1980, harmonic mean of the neighbouring slopes,
    # zero at a local extremum): no overshoot between keyframes, so two bodies scripted to stop 2 cm apart do not
    # swing through each other on the way.
    a, b = v[:-1], v[1:]
    same = (a * b) > 0
    m[1:-1] = np.where(same, 2.0 * a * b / np.where(same, a + b, 1.0), 0.0)
    d = dt.reshape(shape)
    h00 = 2 * uu**3 - 3 * uu**2 + 1
    h10 = uu**3 - 2 * uu**2 + uu
    h01 = -2 * uu**3 + 3 * uu**2
    h11 = uu**3 - uu**2
    return h00 * p[i] + h10 * d * m[i] + h01 * p[i + 1] + h11 * d * m[i + 1]


def global_rotations(local: np.ndarray, parents: tuple[int, ...]) -> np.ndarray:
    """World rotations [..., joints, 3, 3] of a kinematic chain from local rotations [..., joints, 3, 3] (root's
    local = its world rotation). The loop runs over the (static, 24) joints of the tree, vectorized over `...`."""
    out = [None] * len(parents)
    for j, p in enumerate(parents):
        out[j] = local[..., j, :, :] if p < 0 else out[p] @ local[..., j, :, :]
    return np.stack(out, -3)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation matrices [..., 3, 3] taking unit vectors a to unit vectors b (antiparallel: a half turn
    about an axis perpendicular to a)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    ax = np.cross(a, b)
    s = np.linalg.norm(ax, axis=-1, keepdims=True)
    c = np.sum(a * b, -1, keepdims=True)
    # Antiparallel: any perpendicular axis (cross with the least aligned basis vector).
    alt = np.cross(a, np.eye(3)[np.argmin(np.abs(a), -1)])
    alt = alt / np.linalg.norm(alt, axis=-1, keepdims=True)
    axis = np.where(s > 1e-9, ax / np.maximum(s, 1e-12), alt)
    angle = np.arctan2(s, c)
    return aa_to_mat(axis * angle)


def two_bone_ik(
    root: np.ndarray, target: np.ndarray, pole: np.ndarray, l1: np.ndarray, l2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Analytic two-bone IK (shoulder-elbow-wrist, hip-knee-ankle), vectorized over `...`.

    root, target: [..., 3] positions; pole: [..., 3] direction the middle joint should bend towards; l1, l2: [...]
    bone lengths. Returns (middle joint position [..., 3], end position actually reached [..., 3], reached [...]
    bool). A target beyond reach is approached along the straight line (arm fully extended, stopping 1 mm short of
    straight so the bend plane stays defined)."""
    d = target - root
    dist = np.linalg.norm(d, axis=-1)
    reach = (l1 + l2) * 0.9995
    reached = (dist <= reach) & (dist >= np.abs(l1 - l2) + 1e-6)
    dist_c = np.clip(dist, np.abs(l1 - l2) + 1e-6, reach)
    u = d / np.maximum(dist, _EPS)[..., None]
    v = pole - np.sum(pole * u, -1, keepdims=True) * u
    vn = np.linalg.norm(v, axis=-1, keepdims=True)
    fallback = np.cross(u, np.eye(3)[np.argmin(np.abs(u), -1)])
    v = np.where(vn > 1e-9, v / np.maximum(vn, 1e-12), fallback / np.linalg.norm(fallback, axis=-1, keepdims=True))
    cos_a = np.clip((l1 * l1 + dist_c * dist_c - l2 * l2) / (2 * l1 * dist_c), -1.0, 1.0)
    sin_a = np.sqrt(1.0 - cos_a * cos_a)
    mid = root + l1[..., None] * (cos_a[..., None] * u + sin_a[..., None] * v)
    end = root + dist_c[..., None] * u
    return mid, end, reached
