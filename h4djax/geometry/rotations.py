"""NaN-safe rotation conversions: axis-angle <-> matrix <-> quaternion, 6D <-> matrix.

Every function works on arbitrary leading batch shapes (`...`) with purely elementwise / last-axis ops, so no vmap is
needed. Conventions:

- axis-angle (rotation vector) `aa f[..., 3]`: direction = unit axis, norm = angle in radians (SMPL / smplx layout).
- matrix `R f[..., 3, 3]`: active rotation of column vectors, `x' = R @ x` (Rodrigues; matches smplx `batch_rodrigues`).
- quaternion `q f[..., 4]`: `(w, x, y, z)`, scalar first, unit norm.
- 6D `d6 f[..., 6]`: the first two COLUMNS of R stacked `(R[:,0], R[:,1])`, the continuous representation of
  Zhou et al., "On the Continuity of Rotation Representations in Neural Networks", CVPR 2019 (their Eq. 15/16;
  pytorch3d stores the first two rows instead, so its 6D vectors are the transpose of ours).

Why the care: body fits start at zero pose, where the textbook formulas divide by the angle; and fitted joints can
pass through angle pi, where the matrix -> axis-angle map has a sign ambiguity and `arccos` has an infinite slope.
The approach follows the idea of jaxlie (brentyi/jaxlie, `SO3.exp` / `SO3.log`): a per-dtype small-angle threshold,
a Taylor expansion below it, and the "double where" guard that feeds a harmless value into the unused branch so its
gradient is finite too (jnp.where differentiates both branches; NaN * 0 = NaN). Near pi we go through a quaternion
(Shepperd's method picks the numerically largest component) and `atan2`, never `arccos`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "axis_angle_to_quaternion",
    "sixd_to_matrix",
    "matrix_to_sixd",
    "skew",
    "safe_norm",
]


def _small_angle_eps(dtype) -> float:
    """Threshold on the SQUARED angle below which the Taylor branches are used.

    Chosen so the dropped Taylor term (x^6/5040 for sinc) stays below machine epsilon: float32 1e-3, float64 1e-6.
    Larger than needed for the forward value, but it keeps the gradient of the closed form (which involves 1/theta^3)
    out of the cancellation regime.
    """
    return 1e-3 if jnp.finfo(dtype).bits <= 32 else 1e-6


def _float_dtype(x) -> np.dtype:
    dt = jnp.asarray(x).dtype
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


def safe_norm(x: Float[Array, "... n"], axis: int = -1, keepdims: bool = False) -> Float[Array, "..."]:
    """Euclidean norm whose gradient is 0 (not NaN) at x = 0 (double-where guard around sqrt)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    is_zero = sq <= 0.0
    return jnp.where(is_zero, 0.0, jnp.sqrt(jnp.where(is_zero, 1.0, sq)))


def skew(v: Float[Array, "... 3"]) -> Float[Array, "... 3 3"]:
    """Cross-product matrix [v]_x, so that skew(v) @ u == cross(v, u)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack(
        [jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)],
        axis=-2,
    )


def _sinc_and_half_versine(theta2: Float[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """a = sin(t)/t and b = (1 - cos t)/t^2 as functions of t^2, exact and differentiable at t = 0.

    b is computed as 0.5 * sinc(t/2)^2 (from 1 - cos t = 2 sin^2(t/2)), which avoids the catastrophic cancellation of
    1 - cos t in float32. Below the threshold both use their Taylor series in t^2 (even functions), so the gradient at
    zero is exact; the sqrt only ever sees t^2 >= eps (double where).
    """
    eps = _small_angle_eps(theta2.dtype)
    small = theta2 < eps
    t2 = jnp.where(small, 1.0, theta2)  # dummy value for the unused branch: keeps its gradient finite
    t = jnp.sqrt(t2)
    half = 0.5 * t
    a_big = jnp.sin(t) / t
    sinc_half = jnp.sin(half) / half
    b_big = 0.5 * sinc_half * sinc_half
    a_small = 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0
    b_small = 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0
    return jnp.where(small, a_small, a_big), jnp.where(small, b_small, b_big)


def axis_angle_to_matrix(aa: Float[Array, "... 3"]) -> Float[Array, "... 3 3"]:
    """Rodrigues' formula R = I + a [w]_x + b [w]_x^2 with a = sin t / t, b = (1 - cos t)/t^2, t = |w| (radians).

    Finite value and gradient everywhere, including aa = 0 (Taylor branch) and |aa| = pi.
    """
    aa = jnp.asarray(aa, _float_dtype(aa))
    theta2 = jnp.sum(aa * aa, axis=-1)
    a, b = _sinc_and_half_versine(theta2)
    K = skew(aa)
    eye = jnp.eye(3, dtype=aa.dtype)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def axis_angle_to_quaternion(aa: Float[Array, "... 3"]) -> Float[Array, "... 4"]:
    """q = (cos(t/2), sin(t/2)/t * w), NaN-safe at t = 0 (sin(t/2)/t = 0.5 sinc(t/2))."""
    aa = jnp.asarray(aa, _float_dtype(aa))
    theta2 = jnp.sum(aa * aa, axis=-1)
    eps = _small_angle_eps(aa.dtype)
    small = theta2 < eps
    t = jnp.sqrt(jnp.where(small, 1.0, theta2))
    w_big = jnp.cos(0.5 * t)
    s_big = jnp.sin(0.5 * t) / t
    # Taylor in t^2: cos(t/2) = 1 - t^2/8 + t^4/384, sin(t/2)/t = 1/2 - t^2/48 + t^4/3840.
    w_small = 1.0 - theta2 / 8.0 + theta2 * theta2 / 384.0
    s_small = 0.5 - theta2 / 48.0 + theta2 * theta2 / 3840.0
    w = jnp.where(small, w_small, w_big)
    s = jnp.where(small, s_small, s_big)
    return jnp.concatenate([w[..., None], s[..., None] * aa], axis=-1)


def quaternion_to_matrix(q: Float[Array, "... 4"]) -> Float[Array, "... 3 3"]:
    """Unit quaternion (w, x, y, z) -> rotation matrix. The input is normalized first (NaN-safe)."""
    q = jnp.asarray(q, _float_dtype(q))
    n = safe_norm(q, keepdims=True)
    q = q / jnp.where(n > 0, n, 1.0)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quaternion(R: Float[Array, "... 3 3"]) -> Float[Array, "... 4"]:
    """Rotation matrix -> unit quaternion (w, x, y, z) with w >= 0, by Shepperd's method.

    Shepperd (1978) computes the quaternion component with the largest magnitude from the diagonal (its sqrt argument
    is >= 1 because the four arguments sum to 4) and the other three from off-diagonal sums divided by it, so there is
    no division by a small number anywhere, in particular not at angle pi where w -> 0. All four candidates are
    computed (branch-free) with their sqrt arguments clamped away from zero, so the unused ones have finite gradients.
    """
    R = jnp.asarray(R, _float_dtype(R))
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z
    t = jnp.stack(
        [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], axis=-1
    )
    # The chosen candidate has t >= 1, so clamping at 0.1 never changes it; it only guards the unused candidates.
    s = 2.0 * jnp.sqrt(jnp.maximum(t, 0.1))  # = 4 |q_i| for the chosen i
    cand_w = jnp.stack([0.25 * s[..., 0], (r21 - r12) / s[..., 0], (r02 - r20) / s[..., 0], (r10 - r01) / s[..., 0]], -1)
    cand_x = jnp.stack([(r21 - r12) / s[..., 1], 0.25 * s[..., 1], (r01 + r10) / s[..., 1], (r02 + r20) / s[..., 1]], -1)
    cand_y = jnp.stack([(r02 - r20) / s[..., 2], (r01 + r10) / s[..., 2], 0.25 * s[..., 2], (r12 + r21) / s[..., 2]], -1)
    cand_z = jnp.stack([(r10 - r01) / s[..., 3], (r02 + r20) / s[..., 3], (r12 + r21) / s[..., 3], 0.25 * s[..., 3]], -1)
    cands = jnp.stack([cand_w, cand_x, cand_y, cand_z], axis=-2)  # [..., 4 candidates, 4]
    best = jnp.argmax(t, axis=-1)
    onehot = (jnp.arange(4) == best[..., None]).astype(R.dtype)
    q = jnp.sum(onehot[..., :, None] * cands, axis=-2)
    # Canonical hemisphere w >= 0 (q and -q are the same rotation); makes the log map below take the short way.
    q = jnp.where(q[..., :1] < 0, -q, q)
    n = safe_norm(q, keepdims=True)
    return q / jnp.where(n > 0, n, 1.0)


def quaternion_to_axis_angle(q: Float[Array, "... 4"]) -> Float[Array, "... 3"]:
    """Unit quaternion -> axis-angle with angle in [0, pi]: aa = v * 2 atan2(|v|, w) / |v|.

    atan2 is well conditioned everywhere (unlike arccos near pi). Near the identity |v| -> 0 the factor
    2 atan2(n, w)/n is replaced by its Taylor series 2/w - (2/3) n^2/w^3 (w ~ 1 there), with the double-where guard.
    """
    q = jnp.asarray(q, _float_dtype(q))
    q = jnp.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    n2 = jnp.sum(v * v, axis=-1)
    eps = _small_angle_eps(q.dtype)
    small = n2 < eps
    n = jnp.sqrt(jnp.where(small, 1.0, n2))
    w_safe = jnp.where(small, w, 1.0)  # w ~ 1 in the Taylor branch; avoid 1/w blow-ups in the other one
    factor_big = 2.0 * jnp.arctan2(n, w) / n
    factor_small = 2.0 / w_safe - (2.0 / 3.0) * n2 / (w_safe * w_safe * w_safe)
    factor = jnp.where(small, factor_small, factor_big)
    return factor[..., None] * v


def matrix_to_axis_angle(R: Float[Array, "... 3 3"]) -> Float[Array, "... 3"]:
    """Rotation matrix -> axis-angle (angle in [0, pi]); robust near 0 and pi, finite gradients at both.

    At exactly pi the axis sign is arbitrary (both are the same rotation); the result is still a valid rotation
    vector and round-trips through `axis_angle_to_matrix`.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def sixd_to_matrix(d6: Float[Array, "... 6"]) -> Float[Array, "... 3 3"]:
    """6D -> rotation matrix by Gram-Schmidt (Zhou et al. 2019): columns b1, b2, b1 x b2.

    Degenerate inputs (zero or parallel vectors) give a finite (not NaN) matrix and finite gradients.
    """
    d6 = jnp.asarray(d6, _float_dtype(d6))
    a1, a2 = d6[..., :3], d6[..., 3:]
    tiny = jnp.finfo(d6.dtype).tiny ** 0.5
    n1 = safe_norm(a1, keepdims=True)
    b1 = a1 / jnp.maximum(n1, tiny)
    u2 = a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1
    n2 = safe_norm(u2, keepdims=True)
    b2 = u2 / jnp.maximum(n2, tiny)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-1)


def matrix_to_sixd(R: Float[Array, "... 3 3"]) -> Float[Array, "... 6"]:
    """Rotation matrix -> 6D (first two columns, column-major: R[:,0] then R[:,1])."""
    R = jnp.asarray(R)
    return jnp.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)
