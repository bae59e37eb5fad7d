"""Cross-view affinities of 2D detections: distances between the viewing rays of their keypoints (host, numpy).

Two detections in two views are the same person when, joint by joint, the back-projected rays (nearly) intersect
in front of both cameras. For rays ``o_a + s d_a`` and ``o_b + u d_b`` the closest-approach distance is
``|(o_b - o_a) . (d_a x d_b)| / |d_a x d_b|`` (metres), the 3D analogue of the symmetric epipolar distance on the
undistorted normalized plane (both vanish exactly when the two observations satisfy the epipolar constraint
``x_b^T E x_a = 0``). Metres make one threshold work for every rig and resolution, and the closest-approach
parameters ``s, u`` give a cheirality test the epipolar distance lacks: a pair whose rays meet behind a camera is
not a match (as used for multi-view matching by Dong et al., "Fast and Robust Multi-Person 3D Pose Estimation
from Multiple Views", CVPR 2019, who pair epipolar affinities with a cycle-consistent clustering).

The COCO object keypoint similarity (OKS) between two COCO-17 poses of one view, used to compare a detection with
the projection of a triangulated person, is the EgoHumans/pycocotools formula of ``h4djax.triangulate.filter``
(mean of the two keypoint-box areas, keypoints valid in both); ``oks_np`` is its broadcasting numpy twin.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from jaxtyping import Bool, Float

from h4djax.geometry.cameras import Cameras
from h4djax.geometry.cameras_np import camera_centers_np
from h4djax.triangulate.filter import COCO_SIGMAS

__all__ = ["FLIP_COCO17", "NUM_BODY", "RayCosts", "flip_lr", "flip_permutation", "oks_np", "pairwise_ray_costs",
           "ray_directions", "triangulate_np", "undistort_normalized"]

#: Association and tracking use the 17 COCO body keypoints (the first 17 of every joint set we read).
NUM_BODY = 17
#: COCO-17 with left and right swapped (nose, r/l eye, r/l ear, r/l shoulder, ...).
FLIP_COCO17 = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])


#: cv2's iterative undistortion: converged to machine precision on realistic calibrations (tests compare it with
#: ``undistort_points_np``); its C++ loop is far cheaper than numpy on the few hundred points of one frame.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-14)


def undistort_normalized(
    cams: Cameras, uv: Float[np.ndarray, "cams *batch 2"]
) -> Float[np.ndarray, "cams *batch 2"]:
    """Undistorted normalized image-plane coordinates (no K) of pixels ``uv`` per camera, with OpenCV
    (``cv2.undistortPoints`` / ``cv2.fisheye.undistortPoints``, iterated to convergence): the same model as
    ``h4djax.geometry.undistort_points``. Non-finite pixels give non-finite results."""
    uv = np.asarray(uv, np.float64)
    K, dist = np.asarray(cams.K, np.float64), np.asarray(cams.dist, np.float64)
    fisheye = np.asarray(cams.fisheye, bool)
    out = np.empty_like(uv)
    for c in range(uv.shape[0]):  # one C++ call per camera
        pts = np.ascontiguousarray(uv[c].reshape(-1, 1, 2))
        if pts.shape[0] == 0:
            continue
        if fisheye[c]:
            xn = cv2.fisheye.undistortPoints(pts, K[c], dist[c, :4], criteria=_UNDISTORT_CRITERIA)
        else:
            xn = cv2.undistortPoints(pts, K[c], dist[c], None, None, criteria=_UNDISTORT_CRITERIA)
        out[c] = xn.reshape(uv[c].shape)
    return out


def ray_directions(
    cams: Cameras, uv: Float[np.ndarray, "cams *batch 2"]
) -> Float[np.ndarray, "cams *batch 3"]:
    """Unit world-frame directions of the viewing rays through pixels ``uv`` (distortion removed).

    The ray of camera c through the undistorted normalized point (x, y) is ``R_c^T (x, y, 1)`` from the camera
    centre; non-finite pixels give NaN directions (callers mask them with the confidences).
    """
    xn = undistort_normalized(cams, uv)  # [cams, *batch, 2] normalized image plane (no K)
    h = np.concatenate([xn, np.ones(xn.shape[:-1] + (1,))], axis=-1)
    R = np.asarray(cams.R, np.float64)
    d = np.einsum("cji,c...j->c...i", R, h)  # R^T h: camera -> world
    n = np.sqrt((d * d).sum(-1, keepdims=True))
    return d / np.where(n > 0, n, 1.0)


def _line_distances(o_a, d_a, o_b, d_b):
    """Closest-approach distance and ray parameters of lines o_a + s d_a, o_b + u d_b (unit directions).

    Broadcasting over leading axes. Near-parallel rays (|d_a x d_b| < 1e-9) get the point-to-line distance of o_b
    and s = u = +inf (no finite meeting point, so no cheirality veto)."""
    w = o_b - o_a
    n = np.cross(d_a, d_b)
    nn = (n * n).sum(-1)
    par = nn < 1e-18
    nn_safe = np.where(par, 1.0, nn)
    dist_skew = np.abs((w * n).sum(-1)) / np.sqrt(nn_safe)
    wa = np.cross(w, d_a)
    dist_par = np.sqrt((wa * wa).sum(-1))
    # o_a + s d_a - (o_b + u d_b) is perpendicular to both directions at the closest points:
    # s = ((w x d_b) . n) / |n|^2, u = ((w x d_a) . n) / |n|^2.
    s = (np.cross(w, d_b) * n).sum(-1) / nn_safe
    u = (wa * n).sum(-1) / nn_safe
    return (np.where(par, dist_par, dist_skew), np.where(par, np.inf, s), np.where(par, np.inf, u))


class RayCosts(NamedTuple):
    """Pairwise cross-view affinities (``pairwise_ray_costs``), all f[cams, dets, cams, dets], symmetric, inf within
    a view and for non-comparable pairs.

    cost:    min(direct, flipped): the affinity used for clustering (left/right labelling errors forgiven).
    direct:  mean ray distance (m) with the keypoints as labelled.
    flipped: the same with one of the two detections' left/right keypoints swapped (``flip_lr``).
    shared:  number of keypoints valid in both detections.
    """

    cost: np.ndarray
    direct: np.ndarray
    flipped: np.ndarray
    shared: np.ndarray


def pairwise_ray_costs(
    cams: Cameras,
    keypoints: Float[np.ndarray, "cams dets kpts 3"],
    *,
    conf: float = 0.3,
    min_joints: int = 5,
    cap: float = 1.0,
    min_depth: float = 0.1,
    flips: bool = True,
    directions: Float[np.ndarray, "cams dets kpts 3"] | None = None,
) -> RayCosts:
    """Affinity of every pair of detections in different views: the mean ray-to-ray distance over their shared
    COCO-17 keypoints (metres).

    Single-view keypoint models regularly swap a person's left and right (BlazePose on the Pose2Sim demo does so in
    whole views when the person faces the camera), so the cost is also computed with one detection's sides swapped
    and the smaller one is the affinity (``flips``); ``h4djax.associate.associate_frames`` then re-labels the
    swapped views of each cluster consistently.

    Args:
        cams: the rig (host or JAX leaves).
        keypoints: f[cams, dets, kpts, 3] detections per view (x px, y px, confidence; conf 0 = missing / padding),
            first 17 keypoints in COCO order.
        conf: a keypoint takes part if its confidence exceeds this in both detections.
        min_joints: pairs sharing fewer keypoints get an infinite cost (not comparable).
        cap: per-keypoint distances are clipped to ``cap`` metres (one wild keypoint cannot dominate the mean), and
            a keypoint whose rays meet less than ``min_depth`` metres in front of either camera counts as ``cap``.
        flips: also consider left/right-swapped pairs (False: ``cost == direct``).
        directions: precomputed ``ray_directions`` of the keypoints (callers batch the undistortion over frames).
    """
    kp = np.asarray(keypoints, np.float64)[..., :NUM_BODY, :]
    C, D, J, _ = kp.shape
    ok = (kp[..., 2] > conf) & np.isfinite(kp).all(-1)  # [C, D, J]
    if directions is None:
        directions = ray_directions(cams, np.where(ok[..., None], np.nan_to_num(kp[..., :2]), 0.0))
    d = np.asarray(directions, np.float64)[:, :, :J]  # [C, D, J, 3]
    o = camera_centers_np(cams)  # [C, 3]
    same_view = np.eye(C, dtype=bool)[:, None, :, None]

    def costs(d_b, ok_b):
        # Broadcast to [C, D, C, D, J, 3]: pair (c1, i) x (c2, j).
        dist, s, u = _line_distances(o[:, None, None, None, None, :], d[:, :, None, None],
                                     o[None, None, :, None, None, :], d_b[None, None])
        per = np.where((s > min_depth) & (u > min_depth), np.minimum(dist, cap), cap)
        both = ok[:, :, None, None, :] & ok_b[None, None, :, :, :]  # [C, D, C, D, J]
        n = both.sum(-1).astype(np.float64)
        mean = np.where(both, per, 0.0).sum(-1) / np.maximum(n, 1.0)
        return np.where((n >= max(min_joints, 1)) & ~same_view, mean, np.inf), n

    direct, n = costs(d, ok)
    if not flips:
        return RayCosts(cost=direct, direct=direct, flipped=np.full_like(direct, np.inf), shared=n)
    perm = FLIP_COCO17[:J]
    flipped, _ = costs(d[:, :, perm], ok[:, :, perm])
    return RayCosts(cost=np.minimum(direct, flipped), direct=direct, flipped=flipped, shared=n)


def flip_permutation(num_kpts: int) -> np.ndarray:
    """Keypoint permutation that swaps left and right: COCO-17 first; for 25 keypoints also BODY_25B's feet
    (19-21 left big toe / small toe / heel <-> 22-24 right); other extra keypoints stay."""
    perm = np.arange(num_kpts)
    perm[:NUM_BODY] = FLIP_COCO17
    if num_kpts == 25:
        perm[19:25] = [22, 23, 24, 19, 20, 21]
    return perm


def flip_lr(keypoints: Float[np.ndarray, "*batch kpts d"]) -> Float[np.ndarray, "*batch kpts d"]:
    """Swap the left and right keypoints of poses (2D detections or 3D keypoints) along the keypoint axis."""
    keypoints = np.asarray(keypoints)
    return keypoints[..., flip_permutation(keypoints.shape[-2]), :]


def triangulate_np(
    cams: Cameras,
    keypoints: Float[np.ndarray, "cams *batch kpts 3"],
    *,
    conf: float = 0.3,
    outlier: float = 0.02,
) -> tuple[Float[np.ndarray, "*batch kpts 3"], Bool[np.ndarray, "*batch kpts"], Float[np.ndarray, "cams *batch kpts"]]:
    """Fast host triangulation for association decisions: confidence-weighted DLT on the undistorted normalized
    plane, then one round of outlier removal (views whose normalized reprojection error exceeds ``outlier`` and 3x
    the median of the views) and a second DLT.

    This is not the pipeline's triangulation (``h4djax.triangulate``: exhaustive pairwise hypotheses, Gauss-Newton,
    JAX): association only needs a 3D estimate good to a few centimetres to compare people and project them, and
    runs once per frame with a changing number of people, where a jitted program would recompile.

    Returns xyz (m, 0 where invalid), valid (>= 2 views left, in front of them) and the per-view normalized
    reprojection error f[cams, *batch, kpts] (inf where the view was not used).
    """
    kp = np.asarray(keypoints, np.float64)
    C = kp.shape[0]
    batch = kp.shape[1:-1]
    w0 = np.where((kp[..., 2] > conf) & np.isfinite(kp).all(-1), kp[..., 2], 0.0)  # [C, *batch]
    xn = undistort_normalized(cams, np.where(w0[..., None] > 0, np.nan_to_num(kp[..., :2]), 0.0))
    R, t = np.asarray(cams.R, np.float64), np.asarray(cams.t, np.float64)
    # Condition the DLT: a world frame centred on the rig, scaled to unit camera spread (Hartley-Zisserman 4.4.4).
    centres = camera_centers_np(cams)
    mu = centres.mean(0)
    s = max(float(np.sqrt(((centres - mu) ** 2).sum(-1).mean())), 1e-6)
    P = np.concatenate([R * s, (R @ mu + t)[:, :, None]], axis=2)  # x_cam = R (s X' + mu) + t
    xn = xn.reshape(C, -1, 2)
    w = w0.reshape(C, -1)

    def solve(weights):
        wmax = np.maximum(weights.max(0), 1e-12)
        wn = weights / wmax  # rows scaled by conf / max conf (EgoHumans weighted DLT)
        rows_x = wn[..., None] * (xn[..., 0:1] * P[:, None, 2] - P[:, None, 0])  # [C, N, 4]
        rows_y = wn[..., None] * (xn[..., 1:2] * P[:, None, 2] - P[:, None, 1])
        A = np.concatenate([rows_x, rows_y], 0).transpose(1, 0, 2)  # [N, 2C, 4]
        _, _, vt = np.linalg.svd(A)
        h = vt[:, -1]  # [N, 4]
        ok = np.abs(h[:, 3]) > 1e-12
        Xn = h[:, :3] / np.where(ok, h[:, 3], 1.0)[:, None]
        Xc = np.einsum("cij,nj->cni", P[:, :, :3], Xn) + P[:, None, :, 3]  # [C, N, 3] camera coordinates
        z = Xc[..., 2]
        err = np.sqrt(((Xc[..., :2] / np.where(np.abs(z) > 1e-12, z, 1e-12)[..., None] - xn) ** 2).sum(-1))
        used = weights > 0
        front = np.where(used, z > 1e-6, True).all(0)
        return Xn, ok & front & (used.sum(0) >= 2), np.where(used, err, np.inf)

    Xn, ok, err = solve(w)
    med = np.median(np.where(np.isfinite(err), err, np.nan), axis=0) if C > 0 else np.zeros(w.shape[1])
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(err) & (err > outlier) & (err > 3.0 * np.nan_to_num(med)[None])
    if bad.any():
        Xn2, ok2, err2 = solve(np.where(bad, 0.0, w))
        redo = bad.any(0) & ok2
        Xn = np.where(redo[:, None], Xn2, Xn)
        ok = np.where(redo, ok2, ok)
        err = np.where(redo[None], err2, err)
    X = np.where(ok[:, None], mu + s * Xn, 0.0)
    return X.reshape(batch + (3,)), ok.reshape(batch), err.reshape((C,) + batch)


def oks_np(
    a: Float[np.ndarray, "*batch kpts 3"],
    b: Float[np.ndarray, "*batch kpts 3"],
    conf: float = 0.2,
    valid_a: Bool[np.ndarray, "*batch kpts"] | None = None,
    valid_b: Bool[np.ndarray, "*batch kpts"] | None = None,
) -> Float[np.ndarray, "*batch"]:
    """COCO OKS of two poses in one view on their COCO-17 keypoints (broadcasting numpy twin of
    ``h4djax.triangulate.oks_matrix``): keypoints valid in both (confidence > ``conf``, or the given masks), area =
    mean of the two tight keypoint-box areas, ``mean_k exp(-d_k^2 / (2 (2 sigma_k)^2 area))``; 0.1 if no keypoint
    is shared (as EgoHumans)."""
    a = np.asarray(a, np.float64)[..., :NUM_BODY, :]
    b = np.asarray(b, np.float64)[..., :NUM_BODY, :]
    va = (a[..., 2] > conf) if valid_a is None else np.asarray(valid_a)[..., :NUM_BODY]
    vb = (b[..., 2] > conf) if valid_b is None else np.asarray(valid_b)[..., :NUM_BODY]
    va = va & np.isfinite(a[..., :2]).all(-1)
    vb = vb & np.isfinite(b[..., :2]).all(-1)

    def area(x, v):
        xy = np.nan_to_num(x[..., :2])
        lo = np.where(v[..., None], xy, np.inf).min(-2)
        hi = np.where(v[..., None], xy, -np.inf).max(-2)
        wh = np.where(v.any(-1)[..., None], hi - lo, 0.0)
        return wh[..., 0] * wh[..., 1]

    A = 0.5 * (area(a, va) + area(b, vb))
    sig = COCO_SIGMAS[: a.shape[-2]]
    d2 = ((np.nan_to_num(a[..., :2]) - np.nan_to_num(b[..., :2])) ** 2).sum(-1)
    e = d2 / ((2.0 * sig) ** 2) / (A[..., None] + np.spacing(1.0)) / 2.0
    common = va & vb
    n = common.sum(-1)
    s = np.where(common, np.exp(-e), 0.0).sum(-1)
    return np.where(n > 0, s / np.maximum(n, 1), 0.1)
