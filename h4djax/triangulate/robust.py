"""Robust multi-view triangulation (PIPELINE.md 1.3), one jitted program over frames x people x joints x view pairs.

Algorithm per (frame, person, joint) -- EgoHumans ``Triangulator.triangulate_ransac`` with exhaustive pairs, as
used by Harmony4D:

1. Candidate views: finite keypoint with confidence > ``candidate_conf`` (0.5).
2. For every pair (a, b), a < b, of candidate views (all pairs of the rig in lexicographic order, masked, which
   is the reference's pair order restricted to candidates): confidence-weighted DLT of the pair (the reference
   calls the same weighted DLT for pairs), then every candidate view's error
   ``e_v = 0.5 * ||x_v - pi(P_v X)||`` on the undistorted normalized plane. The pair's set = {a, b} + candidates
   with ``e_v < eps_v``. The largest set wins; ``argmax`` returns the first maximum, i.e. the first pair in the
   reference's order wins ties.
3. Confidence-weighted DLT on the winning set (rows scaled by conf / max conf).
4. ``refine_iters`` Gauss-Newton steps on the inlier views' residuals ``x_v - pi(P_v X)`` (unweighted, as the
   reference's ``scipy.optimize.least_squares(..., loss='huber')`` on ``e_v``), with Huber IRLS weights
   ``min(1, delta / e_v)``. scipy's Huber with its default ``f_scale=1`` is ``delta = 1`` on ``e_v``: inactive at
   normalized-plane error scales (1 = a 45 degree angle), so the default is plain least squares, like the
   reference. Both converge to the same minimizer of ``sum_v rho(e_v^2)``.
5. Valid iff ``n_candidates >= min_views`` (the reference's test) and ``n_inliers >= min_inliers`` and the solve
   was finite and determined (regular Gauss-Newton system: the inlier rays are not all parallel -- the reference
   returns an arbitrary point on the ray there). Invalid joints get xyz = 0, n_inliers = 0, reproj_err_px = 0
   and an empty inlier mask.

Inlier threshold: ``inlier_eps`` (0.01) on ``e_v``; if ``inlier_eps_px > 0`` it replaces it per camera: a view is
an inlier when its full normalized-plane distance is below ``inlier_eps_px / f_v`` (``f_v`` = mean focal length of
the camera), i.e. ``e_v < 0.5 * inlier_eps_px / f_v`` -- roughly "pixel distance < inlier_eps_px". So
``inlier_eps = 0.01`` corresponds to ``inlier_eps_px = 0.02 * f`` (PIPELINE.md 1.3).

Batching, memory and compilation: the kernel ``triangulate_tracks`` handles one joint track and broadcasts over
trailing batch axes (frames, people, joints) in a structure-of-arrays layout (see its docstring for why not
``vmap``). The frames axis is cut into fixed-size chunks (the last one zero-padded: one shape, one compilation)
walked with ``jax.lax.map``, so the working set is ``chunk x people x joints x pairs x cams`` regardless of the
sequence length (about 3 MB per frame for 20 cameras, 2 people, 17 joints). ``chunk`` is
``frame_chunk`` or, if 0, derived from a memory budget (``_auto_chunk``). Everything numeric (thresholds, Huber
delta, minimum view counts) is a traced leaf of ``TriangulationParams``: changing it never recompiles; only the
array shapes and the static ``refine_iters`` / ``frame_chunk`` / ``normalize`` do.

Differentiability: xyz is differentiable w.r.t. the 2D keypoints and the camera parameters (K and distortion
through ``undistort_points``, R and t through ``P`` and the world normalization). The inlier selection is discrete
and computed on ``stop_gradient`` inputs (held fixed). The refined point's gradient is the implicit-function
gradient of the least-squares optimum (``_refined_point``): exact at convergence, independent of the DLT start,
and cheap to compile; with the default iteration count it matches finite differences of the forward function to
1e-6 relative (tests). Confidences get no gradient (the refinement is unweighted, as in the reference).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from h4djax.config import TriangulationConfig
from h4djax.geometry import Cameras, project, undistort_points
from h4djax.triangulate.dlt import (
    SYM4_ENTRIES,
    homogeneous_to_point,
    normalized_projections,
    rig_normalization,
    sym4_eig_soa,
    view_normal_entries,
    weighted_dlt,
)

__all__ = [
    "TriangulationParams",
    "Triangulation",
    "triangulate",
    "triangulate_normalized",
    "triangulate_with_config",
    "triangulate_tracks",
    "to_joints3d",
    "view_pairs",
    "inlier_eps_per_camera",
]

#: Working-set budget of one frame chunk (bytes); see ``_auto_chunk``. Measured on the 2-core CPU with 20 cameras
#: (1.9 MB per frame): 16-frame chunks ran 2-3x faster per frame than 64- or 128-frame chunks (cache-resident).
CHUNK_BUDGET_BYTES = 24 * 2**20
#: Upper bound on frames x people x joints per chunk (see ``_auto_chunk``).
MAX_CHUNK_TRACKS = 4096


@struct.dataclass
class TriangulationParams:
    """Numeric triangulation settings, all traced (changing them never recompiles). Scalars (0-d arrays).

    candidate_conf: views with confidence above this are candidates (0.5).
    inlier_eps:     threshold on e_v = 0.5 ||x_v - pi(X)|| (normalized plane, no K) (0.01).
    inlier_eps_px:  if > 0, per-camera threshold in pixels instead (full distance, see module docstring).
    huber_delta:    Huber scale on e_v of the refinement (1.0 = scipy least_squares default f_scale).
    min_views:      fewer candidate views -> invalid joint (2; 3 in some configs).
    min_inliers:    fewer inlier views -> invalid joint (2: any pair's set already has 2).
    """

    candidate_conf: Float[ArrayLike, ""]
    inlier_eps: Float[ArrayLike, ""]
    inlier_eps_px: Float[ArrayLike, ""]
    huber_delta: Float[ArrayLike, ""]
    min_views: Int[ArrayLike, ""]
    min_inliers: Int[ArrayLike, ""]

    @classmethod
    def from_config(cls, cfg: TriangulationConfig | None = None, dtype=None) -> TriangulationParams:
        """Traced parameters from a ``TriangulationConfig`` (defaults: PIPELINE.md 1.3)."""
        cfg = cfg or TriangulationConfig()
        dtype = dtype or jnp.result_type(float)
        f = functools.partial(jnp.asarray, dtype=dtype)
        return cls(
            candidate_conf=f(cfg.candidate_conf), inlier_eps=f(cfg.inlier_eps), inlier_eps_px=f(cfg.inlier_eps_px),
            huber_delta=f(cfg.huber_delta), min_views=jnp.asarray(cfg.min_views, jnp.int32),
            min_inliers=jnp.asarray(cfg.min_inliers, jnp.int32),
        )


@struct.dataclass
class Triangulation:
    """Result of ``triangulate`` (a ``Keypoints3D``-like pytree).

    xyz:           f[frames, people, joints, 3]  world points, metres (0 where invalid).
    valid:         b[frames, people, joints]
    n_inliers:     i[frames, people, joints]     inlier views used by the final solve (0 where invalid).
    n_candidates:  i[frames, people, joints]     views with confidence above candidate_conf.
    reproj_err_px: f[frames, people, joints]     mean over inlier views of the pixel distance between the detection
                                                 and the projection (distortion applied); 0 where invalid.
    inliers:       b[frames, people, joints, cams]
    """

    xyz: Float[Array, "frames people joints 3"]
    valid: Bool[Array, "frames people joints"]
    n_inliers: Int[Array, "frames people joints"]
    n_candidates: Int[Array, "frames people joints"]
    reproj_err_px: Float[Array, "frames people joints"]
    inliers: Bool[Array, "frames people joints cams"]

    def joints3d(self) -> Float[Array, "frames people joints 4"]:
        """FORMATS.md ``joints3d_triangulated`` layout: (x, y, z, valid)."""
        return to_joints3d(self)


def to_joints3d(result: Triangulation) -> Float[Array, "frames people joints 4"]:
    """``[F, P, K, 4]`` array (x, y, z, valid as 0/1) of a ``Triangulation`` (FORMATS.md ``joints3d_triangulated``)."""
    return jnp.concatenate([result.xyz, result.valid[..., None].astype(result.xyz.dtype)], axis=-1)


def view_pairs(num_cams: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (a, b), a < b, in the reference's lexicographic order (static int32 arrays of length C(C-1)/2)."""
    pairs = np.array(list(itertools.combinations(range(num_cams), 2)), dtype=np.int32).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def inlier_eps_per_camera(K: Float[Array, "cams 3 3"], params: TriangulationParams) -> Float[Array, " cams"]:
    """Per-camera threshold on e_v: ``inlier_eps`` or, if ``inlier_eps_px > 0``, ``0.5 * inlier_eps_px / f_v``."""
    f = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    f = jnp.where(jnp.abs(f) > 0, f, 1.0)
    px = jnp.asarray(params.inlier_eps_px, K.dtype)
    return jnp.where(px > 0, 0.5 * px / f, jnp.asarray(params.inlier_eps, K.dtype) * jnp.ones_like(f))


def _safe_depth(z: Array) -> Array:
    # Points on the camera plane have no projection; a tiny same-sign depth keeps values and gradients finite. The
    # reference projects points behind a camera like any other (no cheirality test), so negative z is kept.
    tiny = jnp.asarray(np.finfo(np.dtype(z.dtype)).tiny, z.dtype) ** 0.5
    return jnp.where(jnp.abs(z) > tiny, z, jnp.where(z < 0, -tiny, tiny))


def _trailing(a: Array, n: int) -> Array:
    return a.reshape(a.shape + (1,) * n)


def _project_soa(Pn: Float[Array, "cams 3 4"], X: Float[Array, "3 *batch"]):
    """Normalized-plane projection of points X (coordinates leading) into every camera.

    Returns px, py, z, each [cams, *batch] (z depth-guarded), and the per-camera matrix entries used (for
    Jacobians). Written as broadcast multiply-adds: batched 3x3 matmuls of tiny matrices are slow on CPU.
    """
    n = X.ndim - 1
    A = [[_trailing(Pn[:, i, j], n) for j in range(4)] for i in range(3)]
    Xc = [A[i][0] * X[0] + A[i][1] * X[1] + A[i][2] * X[2] + A[i][3] for i in range(3)]
    z = _safe_depth(Xc[2])
    return Xc[0] / z, Xc[1] / z, z, A


def _solve3_soa(H, g):
    """Closed-form symmetric 3x3 solve (adjugate / determinant) on SoA entries with a relative singularity guard.

    H: dict (j, k), j <= k -> [*batch]; g: list of 3 [*batch]. A (near-)singular system returns a zero step:
    it only happens with degenerate geometry (all inlier rays parallel) where no step is meaningful.
    """
    a, b, c = H[0, 0], H[0, 1], H[0, 2]
    d, e, f = H[1, 1], H[1, 2], H[2, 2]
    A00, A01, A02 = d * f - e * e, c * e - b * f, b * e - c * d
    A11, A12, A22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * A00 + b * A01 + c * A02
    scale = (jnp.abs(a) + jnp.abs(d) + jnp.abs(f)) / 3.0
    eps = jnp.asarray(np.finfo(np.dtype(a.dtype)).eps, a.dtype)
    ok = jnp.abs(det) > 1e3 * eps * scale**3
    inv = jnp.where(ok, 1.0 / jnp.where(ok, det, 1.0), 0.0)
    return jnp.stack([
        (A00 * g[0] + A01 * g[1] + A02 * g[2]) * inv,
        (A01 * g[0] + A11 * g[1] + A12 * g[2]) * inv,
        (A02 * g[0] + A12 * g[1] + A22 * g[2]) * inv,
    ]), ok


def _normal_equations(Pn, xn, w_view, X, huber_delta):
    """Gauss-Newton system of the (Huber-IRLS weighted) reprojection residuals r_v = x_v - pi(P_v X) at X.

    Returns H = sum_v w_v J_v^T J_v (dict of the 6 upper entries) and g = sum_v w_v J_v^T r_v (list of 3), each
    [*batch], with J_v = d pi / d X and w_v = w_view * min(1, delta / e_v). ``g = 0`` is the optimality condition
    of the reference's ``least_squares(loss='huber')`` on e_v = 0.5 ||r_v|| (g is minus half the gradient of
    sum_v rho(e_v^2) up to the constant factor of the Huber scaling).
    """
    px, py, z, A = _project_soa(Pn, X)
    rx, ry = xn[:, 0] - px, xn[:, 1] - py
    # d pi / d X = (A_row0 - px A_row2) / z, (A_row1 - py A_row2) / z
    Jx = [(A[0][j] - px * A[2][j]) / z for j in range(3)]
    Jy = [(A[1][j] - py * A[2][j]) / z for j in range(3)]
    sq = rx * rx + ry * ry
    pos = sq > 0
    e = 0.5 * jnp.sqrt(jnp.where(pos, sq, 1.0))
    big = pos & (e > huber_delta)
    huber = jnp.where(big, huber_delta / jnp.where(big, e, 1.0), 1.0)
    w = w_view * huber
    H = {(j, k): jnp.sum(w * (Jx[j] * Jx[k] + Jy[j] * Jy[k]), axis=0) for j in range(3) for k in range(j, 3)}
    g = [jnp.sum(w * (Jx[j] * rx + Jy[j] * ry), axis=0) for j in range(3)]
    return H, g


def _gauss_newton(
    Pn: Float[Array, "cams 3 4"],
    xn: Float[Array, "cams 2 *batch"],
    w_view: Float[Array, "cams *batch"],
    X0: Float[Array, "3 *batch"],
    huber_delta: Float[Array, ""],
    iters: int,
) -> tuple[Float[Array, "3 *batch"], Bool[Array, "*batch"]]:
    """``iters`` Gauss-Newton / Huber-IRLS steps on r_v = x_v - pi(P_v X) over the views with w_view = 1.

    Also returns whether the last Gauss-Newton system was regular: a singular J^T J means the inlier rays do not
    determine the point (e.g. two coincident cameras), which the caller flags as invalid.
    """

    def step(_, carry):
        X, _ = carry
        H, g = _normal_equations(Pn, xn, w_view, X, huber_delta)
        dx, ok = _solve3_soa(H, g)
        return X + dx, ok

    ok0 = jnp.ones(X0.shape[1:], bool)
    if iters == 0:
        return X0, ok0
    return jax.lax.fori_loop(0, iters, step, (X0, ok0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _refined_point(Pn, xn, w_view, huber_delta, X0, iters):
    """Gauss-Newton refined point with an implicit-function gradient (see ``_refined_point_bwd``)."""
    return _gauss_newton(Pn, xn, w_view, X0, huber_delta, iters)


def _refined_point_fwd(Pn, xn, w_view, huber_delta, X0, iters):
    X, regular = _gauss_newton(Pn, xn, w_view, X0, huber_delta, iters)
    return (X, regular), (Pn, xn, w_view, huber_delta, X)


def _refined_point_bwd(iters, res, cot):
    """Implicit-function theorem at the refined point: g(X*, theta) = 0 => dX*/dtheta = -(dg/dX)^-1 dg/dtheta.

    Why not differentiate the unrolled iterations: the refined point is (to convergence) the minimizer, whose
    derivative does not depend on the start (the weighted DLT) or the iteration count; this gradient costs one
    3x3 solve per track instead of reverse-mode through the Jacobi eigensolver and every Gauss-Newton step, and
    compiles several times faster. dg/dX is the exact Jacobian (three forward-mode products, one per coordinate,
    batched over tracks), so it is also right for large residuals and inside the Huber region. A singular system
    (undetermined point) gives a zero gradient. Confidences and the inlier mask get no gradient: the optimum
    does not depend on them (the refinement is unweighted, the selection is held fixed).
    """
    Pn, xn, w_view, huber_delta, X = res
    X_bar = cot[0]

    def g_of(X_, Pn_, xn_, delta_):
        return jnp.stack(_normal_equations(Pn_, xn_, w_view, X_, delta_)[1])

    cols = [jax.jvp(lambda X_: g_of(X_, Pn, xn, huber_delta), (X,),
                    (jnp.zeros_like(X).at[k].set(1.0),))[1] for k in range(3)]  # cols[k][j] = dg_j / dX_k
    # Symmetrize (dg/dX is minus a Hessian): also removes round-off asymmetry before the symmetric solver.
    Hs = {(j, k): 0.5 * (cols[k][j] + cols[j][k]) for j in range(3) for k in range(j, 3)}
    lam, _ = _solve3_soa(Hs, [X_bar[j] for j in range(3)])
    _, vjp = jax.vjp(lambda P_, x_, d_: g_of(X, P_, x_, d_), Pn, xn, huber_delta)
    Pn_bar, xn_bar, delta_bar = vjp(-lam)
    return Pn_bar, xn_bar, jnp.zeros_like(w_view), delta_bar, jnp.zeros_like(X)


_refined_point.defvjp(_refined_point_fwd, _refined_point_bwd)


def triangulate_tracks(
    Pn: Float[Array, "cams 3 4"],
    xn: Float[Array, "cams 2 *batch"],
    conf: Float[Array, "cams *batch"],
    eps: Float[Array, " cams"],
    params: TriangulationParams,
    refine_iters: int = 3,
) -> tuple[Float[Array, "3 *batch"], Bool[Array, "*batch"], Bool[Array, "cams *batch"], Int[Array, "*batch"],
           Int[Array, "*batch"]]:
    """Robust triangulation of joint tracks: the kernel for one track (``*batch = ()``) that also broadcasts over
    trailing batch axes (frames, people, joints).

    Structure-of-arrays layout (structure axes leading, batch trailing) instead of ``vmap`` over a per-track
    function: the inner dimensions here are tiny (2, 3, 4x4), and with them as minor axes XLA's CPU code was 4-20x
    slower (strided access, batched micro-matmuls). With the batch minor every step is a fused vector loop.

    Args:
        Pn: normalized-plane projection matrices of the working frame (``[R|t]`` or ``normalized_projections``).
        xn: undistorted normalized observations; must be finite (the callers mask non-finite ones).
        conf: confidences, 0 = missing.
        eps: per-camera threshold on e_v (``inlier_eps_per_camera``).
        refine_iters: Gauss-Newton steps (static).
    Returns:
        X (working frame, coordinates leading; 0 if invalid), valid, inlier mask, n_inliers, n_candidates.
    """
    C = xn.shape[0]
    n = xn.ndim - 2
    dtype = xn.dtype
    pair_a, pair_b = view_pairs(C)
    cand = conf > params.candidate_conf
    n_cand = jnp.sum(cand.astype(jnp.int32), axis=0)

    # --- pairwise hypotheses: selection only, so no gradient is propagated through them ----------------------
    Pn_s, xn_s, conf_s = jax.lax.stop_gradient((Pn, xn, conf))
    Q = view_normal_entries(Pn_s, xn_s)  # [10, cams, *batch]
    ca, cb = conf_s[pair_a], conf_s[pair_b]  # [pairs, *batch]
    pair_ok = cand[pair_a] & cand[pair_b]
    cmax = jnp.maximum(ca, cb)
    cmax = jnp.where(cmax > 0, cmax, 1.0)
    wa, wb = ca / cmax, cb / cmax
    M = Q[:, pair_a] * (wa * wa)[None] + Q[:, pair_b] * (wb * wb)[None]  # [10, pairs, *batch]
    eye = _trailing(jnp.asarray([1.0 if i == j else 0.0 for i, j in SYM4_ENTRIES], dtype), n + 1)
    M = jnp.where(pair_ok[None], M, eye)
    vec, _ = sym4_eig_soa(M)
    Xp, finite = homogeneous_to_point(vec)  # [3, pairs, *batch]
    px, py, _, _ = _project_soa(Pn_s, Xp)  # [cams, pairs, *batch]
    dx = xn_s[:, 0][:, None] - px
    dy = xn_s[:, 1][:, None] - py
    # e_v < eps  <=>  ||.||^2 < 4 eps^2 (no sqrt). A pair at infinity keeps only {a, b}, like the reference's
    # inf/NaN errors.
    close = (dx * dx + dy * dy < _trailing(4.0 * eps * eps, n + 1)) & finite[None] & cand[:, None]
    in_pair = np.zeros((C, len(pair_a)), bool)
    in_pair[pair_a, np.arange(len(pair_a))] = True
    in_pair[pair_b, np.arange(len(pair_b))] = True
    sets = close | _trailing(jnp.asarray(in_pair), n)  # [cams, pairs, *batch]
    size = jnp.where(pair_ok, jnp.sum(sets.astype(jnp.int32), axis=0), -1)  # [pairs, *batch]
    best = jnp.argmax(size, axis=0)  # first maximum = first pair in the reference's order wins ties
    any_pair = jnp.max(size, axis=0) >= 2
    inliers = jnp.take_along_axis(sets, best[None, None], axis=1)[:, 0] & any_pair[None]  # [cams, *batch]
    n_inl = jnp.sum(inliers.astype(jnp.int32), axis=0)

    # --- confidence-weighted DLT on the inliers + Gauss-Newton (selection held fixed) ----------------------------
    # The DLT only starts the refinement; the refined point's gradient comes from the implicit function theorem
    # at the optimum (``_refined_point``), so no gradient is traced through the eigensolver.
    X0, ok0 = weighted_dlt(view_normal_entries(Pn_s, xn_s), jnp.where(inliers, conf_s, 0.0))
    X, regular = _refined_point(Pn, xn, inliers.astype(dtype), jnp.asarray(params.huber_delta, dtype), X0,
                                refine_iters)
    finite_X = jnp.all(jnp.isfinite(X), axis=0)
    valid = (n_cand >= params.min_views) & (n_inl >= params.min_inliers) & ok0 & regular & finite_X
    X = jnp.where(valid[None], X, 0.0)
    return X, valid, inliers & valid[None], jnp.where(valid, n_inl, 0), n_cand


def _auto_chunk(num_frames: int, num_cams: int, people: int, joints: int, itemsize: int) -> int:
    """Frames per chunk so that the pair stage's working set stays near ``CHUNK_BUDGET_BYTES``."""
    pairs = max(1, num_cams * (num_cams - 1) // 2)
    # Live per pair: the 4x4 Jacobi state (26 arrays) and the per-camera errors / sets of the pair stage.
    per_frame = people * joints * pairs * (2 * num_cams + 32) * itemsize
    chunk = CHUNK_BUDGET_BYTES // max(per_frame, 1)
    # At most MAX_CHUNK_TRACKS tracks per chunk: jaxlib 0.10.2's CPU "ynn" fusion computes batched projections of
    # more than ~11k points per camera wrongly (docs/triangulation_report.md); few-camera rigs would exceed that.
    chunk = min(chunk, MAX_CHUNK_TRACKS // max(people * joints, 1))
    return int(max(1, min(num_frames, chunk)))


def _sanitize(keypoints: Float[Array, "... 3"]) -> tuple[Float[Array, "... 2"], Float[Array, "..."]]:
    """Pixels and confidences with non-finite entries masked (xy -> 0, conf -> 0), negative conf -> 0."""
    finite = jnp.all(jnp.isfinite(keypoints), axis=-1)
    uv = jnp.where(finite[..., None], keypoints[..., :2], 0.0)
    conf = jnp.where(finite, jnp.maximum(keypoints[..., 2], 0.0), 0.0)
    return uv, conf


def _working_frame(R, t, normalize: bool):
    if normalize:
        center, scale = rig_normalization(R, t)
    else:
        center, scale = jnp.zeros(3, R.dtype), jnp.ones((), R.dtype)
    return normalized_projections(R, t, center, scale), center, scale


def _map_chunks(fn, xs, num_frames: int, chunk: int):
    """Apply ``fn`` to fixed-size frame chunks (zero padded: one shape, one compilation) with ``lax.map``, so
    the working set is one chunk whatever the sequence length; outputs are concatenated and un-padded."""
    chunk = max(1, min(chunk, num_frames))
    n_chunks = -(-num_frames // chunk)
    pad = n_chunks * chunk - num_frames

    def prep(x):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) if pad else x
        return x.reshape((n_chunks, chunk) + x.shape[1:])

    xs = jax.tree.map(prep, xs)
    out = fn(jax.tree.map(lambda x: x[0], xs)) if n_chunks == 1 else None
    if n_chunks == 1:
        out = jax.tree.map(lambda x: x[None], out)
    else:
        out = jax.lax.map(fn, xs)
    return jax.tree.map(lambda x: x.reshape((n_chunks * chunk,) + x.shape[2:])[:num_frames], out)


def _solve_chunk(Pn, center, scale, xn, conf, eps, params, refine_iters):
    """xn [cams, frames, people, joints, 2], conf [cams, frames, people, joints] -> world results (frames first)."""
    finite = jnp.all(jnp.isfinite(xn), axis=-1) & jnp.isfinite(conf)
    conf = jnp.where(finite, jnp.maximum(conf, 0.0), 0.0)
    xn = jnp.where(finite[..., None], xn, 0.0)
    Xn, valid, inliers, n_inl, n_cand = triangulate_tracks(
        Pn, jnp.moveaxis(xn, -1, 1), conf, eps, params, refine_iters
    )
    X = jnp.where(valid[..., None], center + scale * jnp.moveaxis(Xn, 0, -1), 0.0)
    return X, valid, jnp.moveaxis(inliers, 0, -1), n_inl, n_cand


@functools.partial(jax.jit, static_argnames=("refine_iters", "frame_chunk", "normalize"))
def triangulate(
    cams: Cameras,
    keypoints: Float[ArrayLike, "frames cams people joints 3"],
    params: TriangulationParams,
    *,
    refine_iters: int = 3,
    frame_chunk: int = 0,
    normalize: bool = True,
) -> Triangulation:
    """Robust triangulation of 2D keypoints (pixels, confidence; FORMATS.md ``keypoints``) from a calibrated rig.

    Args:
        cams: rig with ``cams`` cameras (same order as the keypoints' cams axis).
        keypoints: f[frames, cams, people, joints, 3] = (x px, y px, confidence); conf 0 or NaN = missing.
        params: traced numeric settings (``TriangulationParams.from_config``).
        refine_iters: Gauss-Newton steps after the weighted DLT (static).
        frame_chunk: frames per chunk (static; 0 = from a 24 MB working-set budget).
        normalize: solve DLT in a rig-normalized world frame (static; False = the reference's algebraic DLT).
    Returns:
        ``Triangulation`` with frames x people x joints results; never NaN, invalid joints flagged.
    """
    keypoints = jnp.asarray(keypoints)
    F, C, Pp, J, _ = keypoints.shape
    dtype = keypoints.dtype
    Pn, center, scale = _working_frame(jnp.asarray(cams.R, dtype), jnp.asarray(cams.t, dtype), normalize)
    eps = inlier_eps_per_camera(jnp.asarray(cams.K, dtype), params)
    chunk = frame_chunk or _auto_chunk(F, C, Pp, J, np.dtype(dtype).itemsize)

    def chunk_fn(kp):  # kp [frames, cams, people, joints, 3]
        uv, conf = _sanitize(jnp.moveaxis(kp, 1, 0))  # [cams, frames, people, joints, (2)]
        xn = undistort_points(cams, uv)
        X, valid, inliers, n_inl, n_cand = _solve_chunk(Pn, center, scale, xn, conf, eps, params, refine_iters)
        uv_hat, _ = project(cams, X)  # [cams, frames, people, joints, 2]
        diff = uv_hat - uv
        sq = jnp.sum(diff * diff, axis=-1)
        pos = sq > 0
        dist = jnp.moveaxis(jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0), 0, -1)
        w = inliers.astype(dtype)
        err = jnp.sum(dist * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)
        return Triangulation(xyz=X, valid=valid, n_inliers=n_inl, n_candidates=n_cand, reproj_err_px=err,
                             inliers=inliers)

    return _map_chunks(chunk_fn, keypoints, F, chunk)


@functools.partial(jax.jit, static_argnames=("refine_iters", "frame_chunk", "normalize"))
def triangulate_normalized(
    R: Float[ArrayLike, "cams 3 3"],
    t: Float[ArrayLike, "cams 3"],
    xn: Float[ArrayLike, "frames cams people joints 2"],
    conf: Float[ArrayLike, "frames cams people joints"],
    eps: Float[ArrayLike, " cams"],
    params: TriangulationParams,
    *,
    refine_iters: int = 3,
    frame_chunk: int = 0,
    normalize: bool = True,
) -> tuple[
    Float[Array, "frames people joints 3"],
    Bool[Array, "frames people joints"],
    Bool[Array, "frames people joints cams"],
    Int[Array, "frames people joints"],
    Int[Array, "frames people joints"],
]:
    """The same algorithm on already-undistorted normalized observations (no intrinsics; for parity tests against
    the numpy reference and for callers with their own camera model). ``eps`` is the per-camera threshold on e_v.

    Returns xyz (world), valid, inliers, n_inliers, n_candidates.
    """
    xn = jnp.asarray(xn)
    conf = jnp.asarray(conf, xn.dtype)
    F, C, Pp, J, _ = xn.shape
    Pn, center, scale = _working_frame(jnp.asarray(R, xn.dtype), jnp.asarray(t, xn.dtype), normalize)
    eps = jnp.asarray(eps, xn.dtype)
    chunk = frame_chunk or _auto_chunk(F, C, Pp, J, np.dtype(xn.dtype).itemsize)

    def chunk_fn(args):
        x, c = args
        return _solve_chunk(Pn, center, scale, jnp.moveaxis(x, 1, 0), jnp.moveaxis(c, 1, 0), eps, params,
                            refine_iters)

    return _map_chunks(chunk_fn, (xn, conf), F, chunk)


def triangulate_with_config(
    cams: Cameras, keypoints: Float[ArrayLike, "frames cams people joints 3"], cfg: TriangulationConfig | None = None
) -> Triangulation:
    """Host convenience: ``triangulate`` with traced parameters and static settings from a ``TriangulationConfig``."""
    cfg = cfg or TriangulationConfig()
    keypoints = jnp.asarray(keypoints)
    params = TriangulationParams.from_config(cfg, dtype=keypoints.dtype)
    return triangulate(cams, keypoints, params, refine_iters=cfg.refine_iters, frame_chunk=cfg.frame_chunk,
                       normalize=cfg.dlt_normalize)
