"""Accuracy metrics against ground truth: joint/vertex errors, limb correctness, 2D reprojection, smoothness and
interpenetration between people. Pure JAX (float32 in the library), masked everywhere.

Masking convention: an entry counts when its ground truth is finite, its prediction is finite, and its optional
`valid` flag is set. Masked entries are NaN in per-item outputs and are left out of every mean; a mean over nothing
is NaN (never 0, which would read as "perfect"). Units: metres (multiply by 1000 for the usual mm tables), pixels.

Interpenetration uses generalized winding numbers (Jacobson, Kavan, Sorkine-Hornung, "Robust Inside-Outside
Segmentation using Generalized Winding Numbers", SIGGRAPH 2013): w(p) = sum over triangles of the signed solid angle
/ 4 pi, with the solid angle of Van Oosterom & Strackee (1983). w is ~1 inside a closed mesh and ~0 outside, and it
degrades gracefully on the small holes and self-intersections of skinned meshes. For body meshes (27k triangles)
the far field is approximated hierarchically as in Barill et al., "Fast Winding Numbers for Soups and Clouds"
(SIGGRAPH 2018): triangles are grouped into spatially compact clusters (`cluster_faces`), the `near_clusters`
clusters closest to a point are summed exactly and every other cluster contributes its first-order dipole term. The
same near clusters give the exact point-to-surface distance used as penetration depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, ArrayLike, Bool, Float, Int

__all__ = [
    "COCO_PCP_LIMBS",
    "FaceClusters",
    "accel_error",
    "cluster_faces",
    "intersection_volume",
    "interpenetration",
    "joint_errors",
    "masked_mean",
    "mpjpe",
    "pa_mpjpe",
    "pcp",
    "procrustes_align",
    "pve",
    "reprojection_errors",
    "winding_and_distance",
    "winding_numbers_exact",
]

#: COCO-17 limbs scored by PCP: upper arms, forearms, thighs, shins, and the two torso sides.
COCO_PCP_LIMBS: tuple[tuple[int, int], ...] = (
    (5, 7), (6, 8), (7, 9), (8, 10), (11, 13), (12, 14), (13, 15), (14, 16), (5, 11), (6, 12),
)

_TINY = 1e-12


def _mask(pred: Array, gt: Array, valid: ArrayLike | None) -> Array:
    m = jnp.all(jnp.isfinite(gt), axis=-1) & jnp.all(jnp.isfinite(pred), axis=-1)
    if valid is not None:
        m = m & jnp.asarray(valid, bool)
    return m


def _safe_norm(x: Array, axis: int = -1) -> Array:
    sq = jnp.sum(x * x, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


@partial(jax.jit, static_argnames=("axis",))
def masked_mean(x: Float[ArrayLike, "..."], axis: int | tuple[int, ...] | None = None) -> Float[Array, "..."]:
    """Mean of the finite entries of `x` (NaN = masked); NaN where nothing is left."""
    x = jnp.asarray(x)
    ok = jnp.isfinite(x)
    n = jnp.sum(ok, axis=axis)
    s = jnp.sum(jnp.where(ok, x, 0.0), axis=axis)
    return jnp.where(n > 0, s / jnp.maximum(n, 1), jnp.nan)


@jax.jit
def joint_errors(
    pred: Float[ArrayLike, "*batch kpts 3"], gt: Float[ArrayLike, "*batch kpts 3"],
    valid: Bool[ArrayLike, "*batch kpts"] | None = None,
) -> Float[Array, "*batch kpts"]:
    """Euclidean error per joint (metres), NaN where masked."""
    pred, gt = jnp.asarray(pred), jnp.asarray(gt)
    m = _mask(pred, gt, valid)
    d = _safe_norm(jnp.where(m[..., None], pred - gt, 0.0))
    return jnp.where(m, d, jnp.nan)


@jax.jit
def mpjpe(
    pred: Float[ArrayLike, "*batch kpts 3"], gt: Float[ArrayLike, "*batch kpts 3"],
    valid: Bool[ArrayLike, "*batch kpts"] | None = None,
) -> Float[Array, ""]:
    """Mean per-joint position error (metres) over all unmasked joints."""
    return masked_mean(joint_errors(pred, gt, valid))


@jax.jit
def pve(
    pred_verts: Float[ArrayLike, "*batch verts 3"], gt_verts: Float[ArrayLike, "*batch verts 3"],
    valid: Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, ""]:
    """Per-vertex error (metres): mean vertex distance over unmasked meshes (valid: one flag per mesh)."""
    v = None if valid is None else jnp.broadcast_to(jnp.asarray(valid, bool)[..., None], jnp.shape(gt_verts)[:-1])
    return masked_mean(joint_errors(pred_verts, gt_verts, v))


def _procrustes_one(x: Float[Array, "kpts 3"], y: Float[Array, "kpts 3"], m: Bool[Array, " kpts"]):
    """Similarity (s, R, t) minimizing sum_m ||s R x + t - y||^2 (Umeyama 1991, with scale and reflection fix)."""
    w = m.astype(x.dtype)
    n = jnp.sum(w)
    n_safe = jnp.maximum(n, 1.0)
    x0 = jnp.where(m[:, None], x, 0.0)
    y0 = jnp.where(m[:, None], y, 0.0)
    mx = jnp.sum(w[:, None] * x0, 0) / n_safe
    my = jnp.sum(w[:, None] * y0, 0) / n_safe
    xc = (x0 - mx) * w[:, None]
    yc = (y0 - my) * w[:, None]
    cov = yc.T @ xc / n_safe
    U, D, Vt = jnp.linalg.svd(cov)
    sign = jnp.sign(jnp.linalg.det(U) * jnp.linalg.det(Vt))
    S = jnp.array([1.0, 1.0, 0.0], x.dtype) + jnp.array([0.0, 0.0, 1.0], x.dtype) * jnp.where(sign == 0, 1.0, sign)
    R = (U * S) @ Vt
    var_x = jnp.sum(xc * xc) / n_safe
    s = jnp.sum(D * S) / jnp.maximum(var_x, _TINY)
    t = my - s * R @ mx
    return s, R, t


@jax.jit
def procrustes_align(
    pred: Float[ArrayLike, "*batch kpts 3"], gt: Float[ArrayLike, "*batch kpts 3"],
    valid: Bool[ArrayLike, "*batch kpts"] | None = None,
) -> Float[Array, "*batch kpts 3"]:
    """`pred` moved by the similarity transform (rotation, translation, scale) that best fits it to `gt` on the
    unmasked joints of each item; NaN for items with fewer than 3 unmasked joints."""
    pred, gt = jnp.asarray(pred), jnp.asarray(gt)
    m = _mask(pred, gt, valid)
    batch = pred.shape[:-2]
    k = pred.shape[-2]
    pf, gf, mf = pred.reshape(-1, k, 3), gt.reshape(-1, k, 3), m.reshape(-1, k)
    s, R, t = jax.vmap(_procrustes_one)(pf, gf, mf)
    aligned = s[:, None, None] * jnp.einsum("bij,bkj->bki", R, jnp.where(mf[..., None], pf, 0.0)) + t[:, None]
    enough = jnp.sum(mf, -1) >= 3
    aligned = jnp.where(enough[:, None, None] & jnp.isfinite(pf), aligned, jnp.nan)
    return aligned.reshape(batch + (k, 3))


@jax.jit
def pa_mpjpe(
    pred: Float[ArrayLike, "*batch kpts 3"], gt: Float[ArrayLike, "*batch kpts 3"],
    valid: Bool[ArrayLike, "*batch kpts"] | None = None,
) -> Float[Array, ""]:
    """MPJPE after per-item Procrustes alignment with scale (metres)."""
    aligned = procrustes_align(pred, gt, valid)
    return mpjpe(aligned, gt, valid)


@partial(jax.jit, static_argnames=("limbs",))
def pcp(
    pred: Float[ArrayLike, "*batch kpts 3"], gt: Float[ArrayLike, "*batch kpts 3"],
    valid: Bool[ArrayLike, "*batch kpts"] | None = None,
    limbs: Sequence[tuple[int, int]] = COCO_PCP_LIMBS, alpha: float = 0.5,
) -> Float[Array, ""]:
    """Percentage of Correct Parts (fraction in [0, 1]): a limb is correct when both of its end points lie within
    `alpha` times the ground-truth limb length of the truth (the "both ends" PCP of Shelf/Campus evaluations).
    Limbs with a masked end point in the ground truth are not scored; a masked prediction counts as wrong."""
    pred, gt = jnp.asarray(pred), jnp.asarray(gt)
    gt_ok = jnp.all(jnp.isfinite(gt), -1)
    if valid is not None:
        gt_ok = gt_ok & jnp.asarray(valid, bool)
    i = np.array([a for a, _ in limbs])
    j = np.array([b for _, b in limbs])
    err = joint_errors(pred, gt)  # NaN where pred or gt missing
    length = _safe_norm(jnp.where((gt_ok[..., i] & gt_ok[..., j])[..., None], gt[..., i, :] - gt[..., j, :], 0.0))
    scored = gt_ok[..., i] & gt_ok[..., j]
    ei, ej = err[..., i], err[..., j]
    good = (ei <= alpha * length) & (ej <= alpha * length)  # NaN compares False: missing prediction = wrong
    n = jnp.sum(scored)
    return jnp.where(n > 0, jnp.sum(good & scored) / jnp.maximum(n, 1), jnp.nan)


@jax.jit
def accel_error(
    pred: Float[ArrayLike, "frames *batch kpts 3"], gt: Float[ArrayLike, "frames *batch kpts 3"],
    valid: Bool[ArrayLike, "frames *batch kpts"] | None = None,
) -> Float[Array, ""]:
    """Acceleration error (metres / frame^2): mean || a_pred - a_gt || of the second finite differences
    x[t+1] - 2 x[t] + x[t-1] along the frames axis (the HMR/VIBE definition), over triples unmasked in all three
    frames."""
    pred, gt = jnp.asarray(pred), jnp.asarray(gt)
    m = _mask(pred, gt, valid)
    m3 = m[2:] & m[1:-1] & m[:-2]
    p = jnp.where(m[..., None], pred, 0.0)
    g = jnp.where(m[..., None], gt, 0.0)
    ap = p[2:] - 2.0 * p[1:-1] + p[:-2]
    ag = g[2:] - 2.0 * g[1:-1] + g[:-2]
    e = _safe_norm(ap - ag)
    return masked_mean(jnp.where(m3, e, jnp.nan))


def reprojection_errors(
    cams, points: Float[ArrayLike, "frames people kpts 3"], uv: Float[ArrayLike, "frames cams people kpts 2"],
    mask: Bool[ArrayLike, "frames cams people kpts"] | None = None,
) -> Float[Array, "frames cams people kpts"]:
    """Pixel distance between 3D points projected into every camera (distortion applied) and 2D positions `uv`
    (observed detections or noise-free ground-truth projections). NaN where masked, where either input is not
    finite, or where the point is behind the camera. Aggregate with `masked_mean(err, axis=(0, 2, 3))` for
    per-camera or `axis=(0, 1, 2)` for per-joint errors."""
    from h4djax.geometry import project

    points = jnp.asarray(points)
    uv = jnp.asarray(uv)
    ok3 = jnp.all(jnp.isfinite(points), -1)
    proj, front = project(cams, jnp.where(ok3[..., None], points, 0.0))  # [cams, F, P, K, 2]
    proj = jnp.moveaxis(proj, 0, 1)
    front = jnp.moveaxis(front, 0, 1)
    m = front & ok3[:, None] & jnp.all(jnp.isfinite(uv), -1)
    if mask is not None:
        m = m & jnp.asarray(mask, bool)
    d = _safe_norm(jnp.where(m[..., None], proj - uv, 0.0))
    return jnp.where(m, d, jnp.nan)


# ---------------------------------------------------------------------------------------------------------------
# Interpenetration: generalized winding numbers (exact + hierarchical far field) and point-surface distance.
# ---------------------------------------------------------------------------------------------------------------


@struct.dataclass
class FaceClusters:
    """Triangles grouped into `clusters` spatially compact groups of `size` (padded with degenerate triangles at
    one of the group's own vertices, which add no solid angle, no area, and a distance to a real surface point).

    faces: i[clusters, size, 3] vertex indices.
    """

    faces: Int[Array, "clusters size 3"]

    @property
    def num_clusters(self) -> int:
        return int(self.faces.shape[0])


def cluster_faces(faces: Int[ArrayLike, "faces 3"], verts: Float[ArrayLike, "verts 3"], size: int = 64) -> FaceClusters:
    """Group triangles by recursive median splits of their centroids along the longest box axis (a balanced k-d
    tree), down to leaves of at most `size` triangles. Host-side, run once per topology; `verts` is any pose of the
    mesh (clusters stay compact under skinning because skinning is locally rigid)."""
    faces = np.asarray(faces, np.int64)
    verts = np.asarray(verts, np.float64)
    cent = verts[faces].mean(1)
    n = len(faces)
    leaves = max(1, int(2 ** np.ceil(np.log2(max(n / size, 1.0)))))
    groups = [np.arange(n)]
    while len(groups) < leaves:
        nxt = []
        for g in groups:
            c = cent[g]
            axis = int(np.argmax(c.max(0) - c.min(0))) if len(g) else 0
            order = g[np.argsort(c[:, axis], kind="stable")]
            half = len(order) // 2
            nxt += [order[:half], order[half:]]
        groups = nxt
    width = max(len(g) for g in groups)
    out = np.empty((len(groups), width, 3), np.int64)
    for i, g in enumerate(groups):
        pad = faces[g[0], 0] if len(g) else 0
        out[i] = pad
        out[i, : len(g)] = faces[g]
    return FaceClusters(faces=jnp.asarray(out, jnp.int32))


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _norm(a):
    sq = _dot(a, a)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _solid_angle_and_distance(p: Float[Array, "3"], tri: Float[Array, "3 3 n"]) -> tuple[Array, Array]:
    """Signed solid angle / (2 pi) of each triangle seen from p (Van Oosterom & Strackee 1983: tan(Omega/2) =
    det[a b c] / (|a||b||c| + (a.b)|c| + (b.c)|a| + (c.a)|b|)), and the exact distance from p to each triangle
    (closest point by region tests, written branch-free). Degenerate triangles give 0 and the vertex distance.

    `tri` is structure-of-arrays, [corner, xyz, n]: every quantity below is a flat [n] vector. (Written with
    explicit components on purpose: XLA on CPU compiles reductions over a trailing axis of 3 after broadcasting
    into loops ~1000x slower than the same arithmetic on separate component arrays.)"""
    a = tuple(tri[0, i] - p[i] for i in range(3))
    b = tuple(tri[1, i] - p[i] for i in range(3))
    c = tuple(tri[2, i] - p[i] for i in range(3))
    la, lb, lc = _norm(a), _norm(b), _norm(c)
    det = _dot(a, _cross(b, c))
    den = la * lb * lc + _dot(a, b) * lc + _dot(b, c) * la + _dot(c, a) * lb
    # atan2(0, 0) = 0 in XLA, so a point exactly on a vertex contributes 0 instead of NaN.
    half_omega = jnp.arctan2(det, den)

    # Distance: interior of the face -> plane distance; otherwise the nearest of the three edges.
    e0 = tuple(b[i] - a[i] for i in range(3))
    e1 = tuple(c[i] - b[i] for i in range(3))
    e2 = tuple(a[i] - c[i] for i in range(3))
    nrm = _cross(e0, tuple(-x for x in e2))
    nn = _dot(nrm, nrm)
    neg = lambda v: tuple(-x for x in v)  # noqa: E731  (p relative to the corners is -a, -b, -c)
    s0 = _dot(_cross(e0, neg(a)), nrm)
    s1 = _dot(_cross(e1, neg(b)), nrm)
    s2 = _dot(_cross(e2, neg(c)), nrm)
    ok = nn > _TINY
    inside = (s0 >= 0) & (s1 >= 0) & (s2 >= 0) & ok
    plane = jnp.abs(_dot(neg(a), nrm)) / jnp.sqrt(jnp.where(ok, nn, 1.0))

    def seg(v, e):  # distance from p to the segment starting at p + v with direction e
        ee = _dot(e, e)
        t = jnp.clip(-_dot(v, e) / jnp.where(ee > _TINY, ee, 1.0), 0.0, 1.0)
        return _norm(tuple(v[i] + t * e[i] for i in range(3)))

    edge = jnp.minimum(jnp.minimum(seg(a, e0), seg(b, e1)), seg(c, e2))
    dist = jnp.where(inside, plane, edge)
    return half_omega / jnp.pi, dist


def winding_numbers_exact(
    points: Float[ArrayLike, "n 3"], verts: Float[ArrayLike, "verts 3"], faces: Int[ArrayLike, "faces 3"],
    chunk: int = 16,
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Exact generalized winding number of each point w.r.t. the triangle mesh (verts, faces), and the distance
    from each point to the surface (metres). O(n * faces); use `winding_and_distance` for body meshes."""
    points = jnp.asarray(points)
    tri = jnp.moveaxis(jnp.asarray(verts)[jnp.asarray(faces)], 0, -1)  # [corner, xyz, faces]

    def one(p):
        h, d = _solid_angle_and_distance(p, tri)
        return jnp.sum(h) / 2.0, jnp.min(d)

    return jax.lax.map(one, points, batch_size=chunk)


def winding_and_distance(
    points: Float[ArrayLike, "n 3"], verts: Float[ArrayLike, "verts 3"], clusters: FaceClusters,
    near_clusters: int = 8, chunk: int = 64,
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Winding number (hierarchical: exact on the `near_clusters` clusters nearest to each point, first-order
    dipole on the others, Barill et al. 2018) and distance to the surface (exact, from the near clusters) for
    each point. With clusters of <= 64 triangles and 8 near clusters the error on a 27k-triangle body mesh stays
    below 0.25 (p99 ~0.15) for points within 3 cm of the skin, far from the 0.5 inside threshold (tested against
    `winding_numbers_exact`)."""
    points = jnp.asarray(points)
    verts = jnp.asarray(verts)
    tri = verts[clusters.faces]  # [C, S, corner, xyz]
    C, S = tri.shape[0], tri.shape[1]
    k = min(near_clusters, C)
    # Per-cluster far-field data: area vector N = sum 1/2 (b - a) x (c - a), area-weighted centre, bounding radius.
    # Structure-of-arrays throughout (see `_solid_angle_and_distance`).
    comp = lambda corner: tuple(tri[:, :, corner, i] for i in range(3))  # noqa: E731
    t0, t1, t2 = comp(0), comp(1), comp(2)
    cr = _cross(tuple(t1[i] - t0[i] for i in range(3)), tuple(t2[i] - t0[i] for i in range(3)))
    cr = tuple(0.5 * x for x in cr)  # [C, S] each
    area = _norm(cr)
    wsum = jnp.sum(area, 1)
    cen = tuple((t0[i] + t1[i] + t2[i]) / 3.0 for i in range(3))
    center = jnp.stack([jnp.where(wsum > _TINY, jnp.sum(area * cen[i], 1) / jnp.maximum(wsum, _TINY), t0[i][:, 0])
                        for i in range(3)])  # [3, C]
    N = jnp.stack([jnp.sum(x, 1) for x in cr])  # [3, C]
    radius = jnp.max(jnp.stack([_norm(tuple(tc[i] - center[i][:, None] for i in range(3))) for tc in (t0, t1, t2)]),
                     axis=(0, 2))
    tri_soa = jnp.moveaxis(tri, (2, 3), (0, 1))  # [corner, xyz, C, S]

    def one(p):
        r = tuple(center[i] - p[i] for i in range(3))  # [C] each
        d2 = _dot(r, r)
        inv = jax.lax.rsqrt(jnp.maximum(d2, _TINY))
        # Dipole term of a cluster seen from p: Omega ~ N . (c - p) / |c - p|^3 (the solid angle of a small flat
        # patch); winding number = Omega / (4 pi).
        far = _dot(tuple(N[i] for i in range(3)), r) * inv * inv * inv / (4.0 * jnp.pi)
        gap = d2 * inv - radius  # lower bound of the distance from p to any triangle of the cluster
        _, idx = jax.lax.top_k(-gap, k)
        near = tri_soa[:, :, idx].reshape(3, 3, k * S)
        h, d = _solid_angle_and_distance(p, near)
        # Selected clusters are summed exactly, all others by their dipole. A cluster within ~2 radii that is not
        # among the k selected keeps the dipole (rare with balanced clusters; tests bound the error).
        w = jnp.sum(far) - jnp.sum(far[idx]) + jnp.sum(h) / 2.0
        # The distance from the k clusters with the smallest lower bound is exact whenever the k-th lower bound
        # exceeds it, which holds for points near the surface (the ones whose depth matters).
        return w, jnp.min(d)

    return jax.lax.map(one, points, batch_size=chunk)


def _inside(w: Array) -> Array:
    # |w| makes the test independent of the face orientation convention of the model file.
    return jnp.abs(w) > 0.5


@struct.dataclass
class Interpenetration:
    """Interpenetration of mesh B's vertices into mesh A (and vice versa), per item.

    depth_max: f[...]  largest distance (m) from a vertex inside the other mesh to that mesh's surface.
    depth_mean: f[...] mean of those distances over the inside vertices (0 when none).
    inside: i[...]     number of vertices (of the tested subset) inside the other mesh, both directions summed.
    """

    depth_max: Array
    depth_mean: Array
    inside: Array


def interpenetration(
    verts_a: Float[ArrayLike, "*batch verts 3"], verts_b: Float[ArrayLike, "*batch verts 3"],
    clusters: FaceClusters, vertex_stride: int = 1, near_clusters: int = 8,
) -> Interpenetration:
    """Penetration depth between two closed meshes of the same topology (two people), per item of `*batch`:
    every `vertex_stride`-th vertex of B is tested inside A and vice versa (winding number > 0.5), its depth is
    its distance to the other surface. Hand-checked in tests on overlapping cubes."""
    va, vb = jnp.asarray(verts_a), jnp.asarray(verts_b)
    batch = va.shape[:-2]
    V = va.shape[-2]
    va_f, vb_f = va.reshape((-1, V, 3)), vb.reshape((-1, V, 3))

    def pair(a, b):
        def direction(points, mesh):
            w, d = winding_and_distance(points[::vertex_stride], mesh, clusters, near_clusters)
            inside = _inside(w)
            return jnp.where(inside, d, 0.0), inside

        da, ia = direction(b, a)
        db, ib = direction(a, b)
        d = jnp.concatenate([da, db])
        ins = jnp.concatenate([ia, ib])
        n = jnp.sum(ins)
        return jnp.max(d), jnp.sum(d) / jnp.maximum(n, 1), n

    dmax, dmean, n = jax.lax.map(lambda ab: pair(*ab), (va_f, vb_f))
    return Interpenetration(depth_max=dmax.reshape(batch), depth_mean=dmean.reshape(batch), inside=n.reshape(batch))


def intersection_volume(
    verts_a: Float[ArrayLike, "*batch verts 3"], verts_b: Float[ArrayLike, "*batch verts 3"],
    clusters: FaceClusters, resolution: int = 16, near_clusters: int = 8,
) -> Float[Array, "*batch"]:
    """Volume (m^3) inside both meshes, per item: the intersection of the two bounding boxes is sampled on a
    `resolution`^3 grid of cell centres, and each cell inside both meshes (winding number > 0.5) counts its volume.
    Error ~ surface area of the overlap x cell size / 2."""
    va, vb = jnp.asarray(verts_a), jnp.asarray(verts_b)
    batch = va.shape[:-2]
    V = va.shape[-2]
    g = (jnp.arange(resolution, dtype=va.dtype) + 0.5) / resolution
    unit = jnp.stack(jnp.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)

    def one(a, b):
        lo = jnp.maximum(a.min(0), b.min(0))
        hi = jnp.minimum(a.max(0), b.max(0))
        ext = jnp.maximum(hi - lo, 0.0)
        pts = lo + unit * ext
        wa, _ = winding_and_distance(pts, a, clusters, near_clusters)
        wb, _ = winding_and_distance(pts, b, clusters, near_clusters)
        both = _inside(wa) & _inside(wb)
        return jnp.sum(both) * jnp.prod(ext) / unit.shape[0]

    vol = jax.lax.map(lambda ab: one(*ab), (va.reshape((-1, V, 3)), vb.reshape((-1, V, 3))))
    return vol.reshape(batch)
