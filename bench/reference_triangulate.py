"""Faithful numpy/scipy re-implementation of the EgoHumans / Harmony4D 2D filter and triangulation (the baseline).

Written from the description in PIPELINE.md 1.2-1.3 and a reading of EgoHumans'
``lib/utils/triangulation.py`` (``Triangulator.run`` / ``triangulate_ransac``) and ``lib/models/pose_estimator.py``
(``refine_poses`` / ``compute_kps_oks``). It keeps their structure on purpose -- Python loops over frames, people,
joints and view pairs, one ``np.linalg.svd`` per DLT, a per-view Python loop for the reprojection errors and one
``scipy.optimize.least_squares(loss='huber', method='trf')`` per joint -- because it is the speed baseline of
``bench/triangulate.py`` and the parity oracle of ``tests/test_triangulate.py``. Not used by the package.

Conventions: observations are undistorted normalized coordinates (x/z, y/z); ``P_v = [R_v | t_v]`` (world ->
camera); errors ``e_v = 0.5 * ||x_v - pi(P_v X)||``. ``undistort_cv2`` converts pixels with OpenCV (independent of
h4djax.geometry), as EgoHumans' ``cam_from_image`` does with pycolmap.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.optimize import least_squares

COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0


# ------------------------------------------------------------------------------------------------------------------
# Camera helpers (OpenCV)
# ------------------------------------------------------------------------------------------------------------------

def undistort_cv2(K: np.ndarray, dist: np.ndarray, fisheye: bool, uv: np.ndarray) -> np.ndarray:
    """Pixels [N, 2] -> undistorted normalized coordinates [N, 2] with OpenCV (iterated to convergence)."""
    pts = np.asarray(uv, np.float64).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
    if fisheye:
        out = cv2.fisheye.undistortPoints(pts, K, np.asarray(dist[:4], np.float64), criteria=crit)
    else:
        out = cv2.undistortPoints(pts, K, np.asarray(dist, np.float64), R=None, P=None, criteria=crit)
    return out.reshape(-1, 2)


# ------------------------------------------------------------------------------------------------------------------
# Triangulation (per joint)
# ------------------------------------------------------------------------------------------------------------------

def to_euclidean(h: np.ndarray) -> np.ndarray:
    return (h.T[:-1] / h.T[-1]).T


def dlt(projs: np.ndarray, points: np.ndarray, use_confidence: bool = True) -> np.ndarray:
    """DLT of one point: projs [N, 3, 4], points [N, 3] = (x, y, conf). Rows scaled by conf / max(conf)."""
    conf = points[:, 2] / points[:, 2].max()
    A = np.zeros((2 * len(projs), 4))
    for j, (P, p) in enumerate(zip(projs, points)):
        A[2 * j] = p[0] * P[2] - P[0]
        A[2 * j + 1] = p[1] * P[2] - P[1]
        if use_confidence:
            A[2 * j: 2 * j + 2] *= conf[j]
    _, _, vh = np.linalg.svd(A, full_matrices=False)
    return to_euclidean(vh[3])


def reprojection_errors(X: np.ndarray, points: np.ndarray, projs: np.ndarray) -> np.ndarray:
    """e_v = 0.5 * ||x_v - pi(P_v X)|| for every view (one Python iteration per view, as the reference)."""
    errs = []
    Xh = np.append(X, 1.0)
    for p, P in zip(points, projs):
        q = P @ Xh
        errs.append(0.5 * np.sqrt(np.sum((p[:2] - q[:2] / q[2]) ** 2)))
    return np.array(errs)


def triangulate_ransac(projs: np.ndarray, points: np.ndarray, eps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exhaustive-pair robust triangulation of one point (>= 2 views). ``eps`` scalar or per view.

    Returns (X [3], sorted inlier view indices, final e_v of the inlier views).
    """
    n = len(points)
    eps = np.broadcast_to(np.asarray(eps, np.float64), (n,))
    best: set[int] = set()
    for i in range(n):
        for j in range(i + 1, n):
            X = dlt(projs[[i, j]], points[[i, j]])
            err = reprojection_errors(X, points, projs)
            current = {i, j}
            for v in range(n):
                if err[v] < eps[v]:
                    current.add(v)
            if len(current) > len(best):
                best = current
    if not best:
        best = set(range(n))
    inl = np.array(sorted(best))
    X = dlt(projs[inl], points[inl])
    res = least_squares(lambda x: reprojection_errors(x, points[inl], projs[inl]), X, loss="huber", method="trf")
    X = res.x
    return X, inl, reprojection_errors(X, points[inl], projs[inl])


def reference_triangulate(
    R: np.ndarray, t: np.ndarray, xn: np.ndarray, conf: np.ndarray, *, candidate_conf: float = 0.5,
    eps=0.01, min_views: int = 2,
) -> dict[str, np.ndarray]:
    """Triangulate every (frame, person, joint) with Python loops.

    R [C,3,3], t [C,3], xn [F,C,P,K,2] normalized, conf [F,C,P,K]; eps scalar or [C].
    Returns xyz [F,P,K,3] (0 where invalid), valid [F,P,K], inliers [F,P,K,C], err [F,P,K] (mean e_v of inliers).
    """
    F, C, P, K, _ = xn.shape
    projs_all = np.concatenate([R, t[:, :, None]], axis=2)
    eps_all = np.broadcast_to(np.asarray(eps, np.float64), (C,))
    xyz = np.zeros((F, P, K, 3))
    valid = np.zeros((F, P, K), bool)
    inliers = np.zeros((F, P, K, C), bool)
    err = np.zeros((F, P, K))
    for f in range(F):
        for p in range(P):
            for k in range(K):
                views, pts = [], []
                for c in range(C):
                    cf = conf[f, c, p, k]
                    if cf > candidate_conf and np.all(np.isfinite(xn[f, c, p, k])):
                        views.append(c)
                        pts.append([xn[f, c, p, k, 0], xn[f, c, p, k, 1], cf])
                if len(views) < min_views or len(views) < 2:
                    continue
                views = np.array(views)
                X, inl, e = triangulate_ransac(projs_all[views], np.array(pts), eps_all[views])
                xyz[f, p, k] = X
                valid[f, p, k] = True
                inliers[f, p, k, views[inl]] = True
                err[f, p, k] = e.mean()
    return {"xyz": xyz, "valid": valid, "inliers": inliers, "err": err}


# ------------------------------------------------------------------------------------------------------------------
# 2D filter (per view)
# ------------------------------------------------------------------------------------------------------------------

def _pose_area(pose: np.ndarray, thr: float) -> float:
    vis = pose[:, 2] > thr
    x, y = pose[vis, 0], pose[vis, 1]
    return (x.max() - x.min()) * (y.max() - y.min())


def kps_oks(k1: np.ndarray, k2: np.ndarray, thr: float) -> float:
    """OKS of two 17-keypoint poses [17, 3] (keypoints valid in both; mean of the two box areas)."""
    both = (k1[:, 2] > thr) & (k2[:, 2] > thr)
    if both.sum() == 0:
        return 0.1
    area = 0.5 * (_pose_area(k1, thr) + _pose_area(k2, thr))
    d2 = (k2[:, 0] - k1[:, 0]) ** 2 + (k2[:, 1] - k1[:, 1]) ** 2
    e = d2 / (COCO_SIGMAS * 2) ** 2 / (area + np.spacing(1)) / 2
    return float(np.sum(np.exp(-e[both])) / both.sum())


def reference_filter_view(kp: np.ndarray, thr: float = 0.2, min_vis: int = 5, oks_thr: float = 0.7,
                          keep: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Filter the poses [P, K, 3] of one view; returns (keypoints with dropped poses' conf = 0, pose_valid [P])."""
    kp = np.array(kp, np.float64)
    P = len(kp)
    valid = np.array([(kp[i, :17, 2] > thr).sum() > min_vis for i in range(P)])
    for i in range(P):
        for j in range(i + 1, P):
            if not (valid[i] and valid[j]):
                continue
            if kps_oks(kp[i, :17], kp[j, :17], thr) > oks_thr:
                if keep == "none":
                    valid[i] = valid[j] = False
                elif kp[i, :17, 2].mean() >= kp[j, :17, 2].mean():
                    valid[j] = False
                else:
                    valid[i] = False
    kp[~valid, :, 2] = 0
    return kp, valid
