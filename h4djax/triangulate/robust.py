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
   was finite. Invalid joints get xyz = 0, n_inliers = 0, reproj_err_px = 0 and an empty inlier mask.

Inlier threshold: ``inlier_eps`` (0.01) on ``e_v``; if ``inlier_eps_px > 0`` it replaces it per camera: a view is
an inlier when its full normalized-plane distance is below ``inlier_eps_px / f_v`` (``f_v`` = mean focal length of
the camera), i.e. ``e_v < 0.5 * inlier_eps_px / f_v`` -- roughly "pixel distance < inlier_eps_px". So
``inlier_eps = 0.01`` corresponds to ``inlier_eps_px = 0.02 * f`` (PIPELINE.md 1.3).

Batching, memory and compilation: the kernel ``triangulate_track`` handles one joint track and is lifted with
``vmap`` over people and joints (``_frame``), and the frames axis is walked with ``jax.lax.map(..., batch_size=
chunk)``: ``chunk`` frames are vmapped at a time, so the working set is ``chunk x people x joints x pairs x cams``
regardless of the sequence length (about 3.3 MB per frame for 20 cameras, 2 people, 17 joints). ``chunk`` is
``frame_chunk`` or, if 0, derived from a memory budget (``_auto_chunk``). Everything numeric (thresholds, Huber
delta, minimum view counts) is a traced leaf of ``TriangulationParams``: changing it never recompiles; only the
array shapes and the static ``refine_iters`` / ``frame_chunk`` / ``normalize`` do.

Differentiability: the output is differentiable w.r.t. the 2D keypoints, their confidences (through the weighted
DLT start) and the camera parameters (K and distortion through ``undistort_points``, R and t through ``P`` and the
world normalization). The inlier selection is discrete and computed on ``stop_gradient`` inputs; the gradient is
that of the unrolled weighted DLT + Gauss-Newton steps with the selection held fixed.
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
    dlt_point,
    dlt_rows,
    homogeneous_to_point,
    normal_matrix,
    normalized_projections,
    rig_normalization,
    sym4_smallest_eigvec,
)

__all__ = [
    "TriangulationParams",
    "Triangulation",
    "triangulate",
    "triangulate_normalized",
    "triangulate_with_config",
    "triangulate_track",
    "to_joints3d",
    "view_pairs",
    "inlier_eps_per_camera",
]

#: Default working-set budget of one frame chunk (bytes); see ``_auto_chunk``.
CHUNK_BUDGET_BYTES = 64 * 2**20


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


def _solve3(H: Float[Array, "3 3"], g: Float[Array, "3"]) -> tuple[Float[Array, "3"], Array]:
    """Closed-form symmetric 3x3 solve (adjugate / determinant) with a relative singularity guard (step 0)."""
    a, b, c = H[0, 0], H[0, 1], H[0, 2]
    d, e, f = H[1, 1], H[1, 2], H[2, 2]
    A00 = d * f - e * e
    A01 = c * e - b * f
    A02 = b * e - c * d
    A11 = a * f - c * c
    A12 = b * c - a * e
    A22 = a * d - b * b
    det = a * A00 + b * A01 + c * A02
    scale = (jnp.abs(a) + jnp.abs(d) + jnp.abs(f)) / 3.0
    eps = jnp.asarray(np.finfo(np.dtype(H.dtype)).eps, H.dtype)
    ok = jnp.abs(det) > 1e3 * eps * scale**3
    inv_det = 1.0 / jnp.where(ok, det, 1.0)
    x = jnp.stack([
        A00 * g[0] + A01 * g[1] + A02 * g[2],
        A01 * g[0] + A11 * g[1] + A12 * g[2],
        A02 * g[0] + A12 * g[1] + A22 * g[2],
    ]) * inv_det
    return jnp.where(ok, x, 0.0), ok


def _project_normalized(Pn: Float[Array, "cams 3 4"], X: Float[Array, "... 3"]):
    """Normalized-plane projections of X (frame of Pn) in every camera: (xy [..., cams, 2], depth-guarded Xc)."""
    Xc = jnp.einsum("cij,...j->...ci", Pn[:, :, :3], X) + Pn[:, :, 3]
    z = _safe_depth(Xc[..., 2])
    return Xc[..., :2] / z[..., None], z


def _gauss_newton(
    Pn: Float[Array, "cams 3 4"],
    xn: Float[Array, "cams 2"],
    w_view: Float[Array, " cams"],
    X0: Float[Array, "3"],
    huber_delta: Float[Array, ""],
    iters: int,
) -> Float[Array, "3"]:
    """``iters`` Gauss-Newton / Huber-IRLS steps on r_v = x_v - pi(P_v X) over views with w_view = 1."""
    A = Pn[:, :, :3]

    def step(_, X):
        proj, z = _project_normalized(Pn, X)
        r = xn - proj
        inv_z = 1.0 / z
        zero = jnp.zeros_like(z)
        # d pi / d Xc for pi = (x/z, y/z)
        Jc = jnp.stack([
            jnp.stack([inv_z, zero, -proj[:, 0] * inv_z], -1),
            jnp.stack([zero, inv_z, -proj[:, 1] * inv_z], -1),
        ], axis=-2)
        J = Jc @ A  # [cams, 2, 3]
        sq = jnp.sum(r * r, axis=-1)
        pos = sq > 0
        e = 0.5 * jnp.sqrt(jnp.where(pos, sq, 1.0))
        huber = jnp.where(pos & (e > huber_delta), huber_delta / jnp.where(pos, e, 1.0), 1.0)
        w = w_view * huber
        H = jnp.einsum("c,cki,ckj->ij", w, J, J)
        g = jnp.einsum("c,cki,ck->i", w, J, r)
        dx, _ = _solve3(H, g)
        return X + dx

    return jax.lax.fori_loop(0, iters, step, X0)


def triangulate_track(
    Pn: Float[Array, "cams 3 4"],
    xn: Float[Array, "cams 2"],
    conf: Float[Array, " cams"],
    eps: Float[Array, " cams"],
    params: TriangulationParams,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    refine_iters: int,
) -> tuple[Float[Array, "3"], Bool[Array, ""], Bool[Array, " cams"], Int[Array, ""], Int[Array, ""]]:
    """One joint track (kernel; vmapped by ``triangulate``).

    Args:
        Pn: normalized-plane projection matrices of the working frame (``[R|t]`` or ``normalized_projections``).
        xn: undistorted normalized observations; must be finite (non-finite ones are masked by the caller).
        conf: confidences, 0 = missing.
        eps: per-camera threshold on e_v.
        pair_a, pair_b: static view-pair indices (``view_pairs``).
    Returns:
        X (working frame, 0 if invalid), valid, inlier mask, n_inliers, n_candidates.
    """
    dtype = xn.dtype
    cand = conf > params.candidate_conf
    n_cand = jnp.sum(cand.astype(jnp.int32))

    # --- pairwise hypotheses (selection only: no gradient needed) ---------------------------------------------
    Pn_s, xn_s, conf_s = jax.lax.stop_gradient((Pn, xn, conf))
    Q = normal_matrix(dlt_rows(Pn_s, xn_s))  # [cams, 4, 4]
    ca, cb = conf_s[pair_a], conf_s[pair_b]
    pair_ok = cand[pair_a] & cand[pair_b]
    cmax = jnp.maximum(ca, cb)
    cmax = jnp.where(cmax > 0, cmax, 1.0)
    wa, wb = ca / cmax, cb / cmax
    M = (wa * wa)[:, None, None] * Q[pair_a] + (wb * wb)[:, None, None] * Q[pair_b]
    M = jnp.where(pair_ok[:, None, None], M, jnp.eye(4, dtype=dtype))
    vec, _ = sym4_smallest_eigvec(M)
    Xp, finite = homogeneous_to_point(vec)  # [pairs, 3]
    proj, _ = _project_normalized(Pn_s, Xp)  # [pairs, cams, 2]
    d2 = jnp.sum((xn_s[None] - proj) ** 2, axis=-1)
    # e_v < eps  <=>  ||.||^2 < 4 eps^2 (no sqrt). Views at infinity / non-finite pairs keep only {a, b}.
    close = (d2 < 4.0 * eps[None] ** 2) & finite[:, None] & cand[None]
    views = jnp.arange(xn.shape[0])
    in_pair = (views[None] == pair_a[:, None]) | (views[None] == pair_b[:, None])
    sets = close | in_pair
    size = jnp.where(pair_ok, jnp.sum(sets.astype(jnp.int32), axis=-1), -1)
    best = jnp.argmax(size)  # first maximum = first pair in the reference's order wins ties
    any_pair = size[best] >= 2
    inliers = sets[best] & any_pair
    n_inl = jnp.sum(inliers.astype(jnp.int32))

    # --- final confidence-weighted DLT + Gauss-Newton refinement (differentiable, selection fixed) -------------
    w_inl = jnp.where(inliers, conf, 0.0)
    X0, ok0 = dlt_point(Pn, xn, w_inl)
    X = _gauss_newton(Pn, xn, inliers.astype(dtype), X0, jnp.asarray(params.huber_delta, dtype), refine_iters)
    finite_X = jnp.all(jnp.isfinite(X))
    valid = (n_cand >= params.min_views) & (n_inl >= params.min_inliers) & ok0 & finite_X
    X = jnp.where(valid, X, 0.0)
    inliers = inliers & valid
    return X, valid, inliers, jnp.where(valid, n_inl, 0), n_cand


def _auto_chunk(num_frames: int, num_cams: int, people: int, joints: int, itemsize: int) -> int:
    """Frames per vmapped batch so that the per-pair working set stays near ``CHUNK_BUDGET_BYTES``."""
    pairs = max(1, num_cams * (num_cams - 1) // 2)
    # Live per pair: projected points and errors over cams (3 * cams), the 4x4 Jacobi state (~26 arrays), masks.
    per_frame = people * joints * pairs * (4 * num_cams + 48) * itemsize
    return int(max(1, min(num_frames, CHUNK_BUDGET_BYTES // max(per_frame, 1))))


def _sanitize(keypoints: Float[Array, "... 3"]) -> tuple[Float[Array, "... 2"], Float[Array, "..."]]:
    """Pixels and confidences with non-finite entries masked (xy -> 0, conf -> 0), negative conf -> 0."""
    finite = jnp.all(jnp.isfinite(keypoints), axis=-1)
    uv = jnp.where(finite[..., None], keypoints[..., :2], 0.0)
    conf = jnp.where(finite, jnp.maximum(keypoints[..., 2], 0.0), 0.0)
    return uv, conf


def _frame_normalized(Pn, xn, conf, eps, params, refine_iters):
    """One frame: xn [cams, people, joints, 2], conf [cams, people, joints] -> per (people, joints) results."""
    pair_a, pair_b = view_pairs(Pn.shape[0])
    track = functools.partial(
        triangulate_track, pair_a=pair_a, pair_b=pair_b, refine_iters=refine_iters, params=params
    )
    xn_t = jnp.moveaxis(xn, 0, -2)  # [people, joints, cams, 2]
    conf_t = jnp.moveaxis(conf, 0, -1)  # [people, joints, cams]
    per_joint = jax.vmap(jax.vmap(lambda x, c: track(Pn, x, c, eps)))
    return per_joint(xn_t, conf_t)


def _working_frame(R, t, normalize: bool):
    if normalize:
        center, scale = rig_normalization(R, t)
    else:
        center, scale = jnp.zeros(3, R.dtype), jnp.ones((), R.dtype)
    return normalized_projections(R, t, center, scale), center, scale


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
        frame_chunk: frames vmapped at a time (static; 0 = from a 64 MB working-set budget).
        normalize: solve DLT in a rig-normalized world frame (static; False = bitwise reference behaviour).
    Returns:
        ``Triangulation`` with frames x people x joints results; never NaN, invalid joints flagged.
    """
    keypoints = jnp.asarray(keypoints)
    F, C, Pp, J, _ = keypoints.shape
    dtype = keypoints.dtype
    R = jnp.asarray(cams.R, dtype)
    t = jnp.asarray(cams.t, dtype)
    K = jnp.asarray(cams.K, dtype)
    Pn, center, scale = _working_frame(R, t, normalize)
    eps = inlier_eps_per_camera(K, params)
    chunk = frame_chunk or _auto_chunk(F, C, Pp, J, np.dtype(dtype).itemsize)

    def frame(kp):  # kp [cams, people, joints, 3]
        uv, conf = _sanitize(kp)
        xn = undistort_points(cams, uv)
        ok = jnp.all(jnp.isfinite(xn), axis=-1)  # undistortion outside a lens's valid region
        conf = jnp.where(ok, conf, 0.0)
        xn = jnp.where(ok[..., None], xn, 0.0)
        Xn, valid, inliers, n_inl, n_cand = _frame_normalized(Pn, xn, conf, eps, params, refine_iters)
        X = jnp.where(valid[..., None], center + scale * Xn, 0.0)
        uv_hat, _ = project(cams, X)  # [cams, people, joints, 2]
        diff = jnp.moveaxis(uv_hat - uv, 0, -2)  # [people, joints, cams, 2]
        sq = jnp.sum(diff * diff, axis=-1)
        pos = sq > 0
        dist = jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)
        w = inliers.astype(dtype)
        err = jnp.sum(dist * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)
        return Triangulation(xyz=X, valid=valid, n_inliers=n_inl, n_candidates=n_cand, reproj_err_px=err,
                             inliers=inliers)

    return jax.lax.map(frame, keypoints, batch_size=min(chunk, F) if F else None)


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
    R = jnp.asarray(R, xn.dtype)
    t = jnp.asarray(t, xn.dtype)
    eps = jnp.asarray(eps, xn.dtype)
    Pn, center, scale = _working_frame(R, t, normalize)
    chunk = frame_chunk or _auto_chunk(F, C, Pp, J, np.dtype(xn.dtype).itemsize)

    def frame(args):
        x, c = args
        finite = jnp.all(jnp.isfinite(x), axis=-1) & jnp.isfinite(c)
        x = jnp.where(finite[..., None], x, 0.0)
        c = jnp.where(finite, jnp.maximum(c, 0.0), 0.0)
        Xn, valid, inliers, n_inl, n_cand = _frame_normalized(Pn, x, c, eps, params, refine_iters)
        X = jnp.where(valid[..., None], center + scale * Xn, 0.0)
        return X, valid, inliers, n_inl, n_cand

    return jax.lax.map(frame, (xn, conf), batch_size=min(chunk, F) if F else None)


def triangulate_with_config(
    cams: Cameras, keypoints: Float[ArrayLike, "frames cams people joints 3"], cfg: TriangulationConfig | None = None
) -> Triangulation:
    """Host convenience: ``triangulate`` with traced parameters and static settings from a ``TriangulationConfig``."""
    cfg = cfg or TriangulationConfig()
    keypoints = jnp.asarray(keypoints)
    params = TriangulationParams.from_config(cfg, dtype=keypoints.dtype)
    return triangulate(cams, keypoints, params, refine_iters=cfg.refine_iters, frame_chunk=cfg.frame_chunk,
                       normalize=cfg.dlt_normalize)
