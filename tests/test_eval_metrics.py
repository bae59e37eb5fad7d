"""Metrics against hand-computed cases (h4djax.eval.metrics)."""

import numpy as np
import pytest

from h4djax.eval import metrics as M
from h4djax.geometry import from_numpy


def _cube(lo, hi):
    """Axis-aligned box as a closed triangle mesh (12 triangles, outward counter-clockwise)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    # vertex index = 4 * ix + 2 * iy + iz
    f = np.array([
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # x = lo, x = hi
        [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # y = lo, y = hi
        [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # z = lo, z = hi
    ])
    return v, f


def test_mpjpe_pve_hand_computed():
    gt = np.zeros((1, 1, 3, 3))
    pred = gt.copy()
    pred[0, 0, 0] = [0.3, 0.4, 0.0]  # error 0.5
    pred[0, 0, 1] = [0.0, 0.0, 0.2]  # error 0.2
    assert float(M.mpjpe(pred, gt)) == pytest.approx((0.5 + 0.2 + 0.0) / 3, abs=1e-6)
    # Masking: a NaN ground-truth joint and a valid flag both remove joints from the mean.
    gt_nan = gt.copy()
    gt_nan[0, 0, 2] = np.nan
    assert float(M.mpjpe(pred, gt_nan)) == pytest.approx(0.35, abs=1e-6)
    valid = np.array([[[True, False, True]]])
    assert float(M.mpjpe(pred, gt, valid)) == pytest.approx(0.25, abs=1e-6)
    assert np.isnan(float(M.mpjpe(pred, gt, np.zeros((1, 1, 3), bool))))  # nothing left -> NaN, not 0
    # PVE is the same mean over vertices, masked per mesh.
    assert float(M.pve(pred, gt, valid=np.array([[True]]))) == pytest.approx((0.5 + 0.2) / 3, abs=1e-6)
    assert np.isnan(float(M.pve(pred, gt, valid=np.array([[False]]))))


def test_pa_mpjpe_removes_similarity_and_keeps_shape_error():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(2, 1, 17, 3))
    a = 0.7
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    pred = 1.3 * gt @ R.T + np.array([0.5, -1.0, 2.0])
    assert float(M.pa_mpjpe(pred, gt)) == pytest.approx(0.0, abs=1e-5)
    assert float(M.mpjpe(pred, gt)) > 0.5
    # Hand case: a square with one corner pushed out; the optimal similarity of 4 points can be checked with the
    # closed form (centroid + scale + rotation) -- here we compare against an independent numpy Umeyama.
    x = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0], [0.5, 0.5, 1.0]])
    y = x.copy()
    y[2] += [0.2, 0.1, 0.0]
    mx, my = x.mean(0), y.mean(0)
    U, D, Vt = np.linalg.svd((y - my).T @ (x - mx) / 5)
    S = np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))])
    Rr = U @ S @ Vt
    s = np.trace(np.diag(D) @ S) / (((x - mx) ** 2).sum() / 5)
    ref = np.linalg.norm(s * (x - mx) @ Rr.T + my - y, axis=1).mean()
    assert float(M.pa_mpjpe(x[None], y[None])) == pytest.approx(ref, abs=1e-5)
    # Fewer than 3 unmasked joints: no alignment, NaN.
    v = np.array([[True, True, False, False, False]])
    assert np.isnan(float(M.pa_mpjpe(x[None], y[None], v)))


def test_pcp_both_ends_rule():
    gt = np.zeros((1, 17, 3))
    gt[0, 5] = [0.0, 0.0, 0.0]
    gt[0, 7] = [0.3, 0.0, 0.0]  # upper arm (5, 7), length 0.3
    gt[0, 9] = [0.6, 0.0, 0.0]  # forearm (7, 9), length 0.3
    pred = gt.copy()
    pred[0, 9] += [0.0, 0.2, 0.0]  # wrist off by 0.2 > 0.5 * 0.3: forearm wrong, upper arm right
    limbs = ((5, 7), (7, 9))
    assert float(M.pcp(pred, gt, limbs=limbs)) == pytest.approx(0.5)
    pred[0, 9] = gt[0, 9] + [0.0, 0.1, 0.0]  # 0.1 <= 0.15: correct
    assert float(M.pcp(pred, gt, limbs=limbs)) == pytest.approx(1.0)
    pred[0, 7] = np.nan  # a missing prediction counts as wrong for both limbs
    assert float(M.pcp(pred, gt, limbs=limbs)) == pytest.approx(0.0)


def test_accel_error_second_differences():
    t = np.arange(6, dtype=float)
    gt = np.zeros((6, 1, 3))
    gt[:, 0, 0] = t  # constant velocity: zero acceleration
    pred = gt.copy()
    pred[:, 0, 1] = t**2  # acceleration 2 per frame^2 along y
    assert float(M.accel_error(pred, gt)) == pytest.approx(2.0, abs=1e-6)
    # A masked frame removes the three triples that touch it.
    valid = np.ones((6, 1), bool)
    valid[5] = False
    pred2 = pred.copy()
    pred2[5, 0, 1] = 100.0
    assert float(M.accel_error(pred2, gt, valid)) == pytest.approx(2.0, abs=1e-6)


def test_reprojection_errors_pinhole_hand_computed():
    K = np.array([[1000.0, 0, 500], [0, 1000.0, 400], [0, 0, 1]])
    cams = from_numpy(K[None], None, np.eye(3)[None], np.zeros((1, 3)), np.array([[1000, 800]]))
    X = np.array([[[[0.1, 0.2, 2.0], [0.0, 0.0, 4.0]]]])  # [F=1, P=1, K=2, 3]
    # Projections: (550, 500) and (500, 400). Observations 3-4-5 px and 0 px away.
    uv = np.array([[[[[553.0, 504.0], [500.0, 400.0]]]]])
    err = np.asarray(M.reprojection_errors(cams, X, uv))
    np.testing.assert_allclose(err[0, 0, 0], [5.0, 0.0], atol=1e-3)
    mask = np.array([[[[False, True]]]])
    err = np.asarray(M.reprojection_errors(cams, X, uv, mask))
    assert np.isnan(err[0, 0, 0, 0]) and err[0, 0, 0, 1] == pytest.approx(0.0, abs=1e-3)
    # Behind the camera: masked.
    err = np.asarray(M.reprojection_errors(cams, -X, uv))
    assert np.all(np.isnan(err))
    # Aggregations used by the report.
    assert float(M.masked_mean(np.array([1.0, np.nan, 3.0]))) == 2.0


def test_winding_numbers_and_distance_on_a_cube():
    v, f = _cube([0, 0, 0], [1, 1, 1])
    pts = np.array([[0.5, 0.5, 0.5], [0.9, 0.2, 0.3], [1.5, 0.5, 0.5], [-0.2, -0.2, -0.2], [0.5, 0.5, 0.99]])
    w, d = M.winding_numbers_exact(pts, v, f)
    np.testing.assert_allclose(np.abs(np.asarray(w)), [1, 1, 0, 0, 1], atol=1e-5)
    np.testing.assert_allclose(np.asarray(d), [0.5, 0.1, 0.5, np.sqrt(3 * 0.04), 0.01], atol=1e-6)
    # The hierarchical version equals the exact one when every cluster is "near".
    w2, d2 = M.winding_and_distance(pts, v, M.cluster_faces(f, v, size=4), near_clusters=8)
    np.testing.assert_allclose(np.asarray(w2), np.asarray(w), atol=1e-5)
    np.testing.assert_allclose(np.asarray(d2), np.asarray(d), atol=1e-6)


def _icosphere(n: int):
    t = (1 + 5**0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t], [t, 0, -1],
         [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
         [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]]
    v = [np.array(x, float) / np.linalg.norm(x) for x in v]
    for _ in range(n):
        cache, nf = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = v[a] + v[b]
                v.append(m / np.linalg.norm(m))
                cache[key] = len(v) - 1
            return cache[key]

        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = nf
    return np.array(v), np.array(f)


def test_fast_winding_numbers_match_exact_on_a_fine_mesh():
    v, f = _icosphere(4)  # 5120 triangles
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1.3, 1.3, (200, 3))
    we, de = M.winding_numbers_exact(pts, v, f)
    wf, df = M.winding_and_distance(pts, v, M.cluster_faces(f, v))
    assert np.max(np.abs(np.asarray(wf) - np.asarray(we))) < 0.05
    # Distances are exact near the surface (where depths matter), close elsewhere.
    de, df = np.asarray(de), np.asarray(df)
    np.testing.assert_allclose(df[de < 0.1], de[de < 0.1], atol=1e-6)
    np.testing.assert_allclose(df, de, rtol=1e-3)
    r = np.linalg.norm(pts, axis=1)
    clear = np.abs(r - 1) > 0.01  # away from the faceted surface
    assert np.all((np.abs(np.asarray(wf)) > 0.5)[clear] == (r < 1)[clear])


def test_interpenetration_depth_of_overlapping_boxes():
    va, f = _cube([0, 0, 0], [1, 1, 1])
    vb, _ = _cube([0.8, 0.1, 0.1], [1.8, 0.9, 0.9])
    cl = M.cluster_faces(f, va, size=4)
    ip = M.interpenetration(va[None], vb[None], cl)
    # B's four corners at x = 0.8 lie inside A; the nearest face of A is 0.1 away (y or z); A's corners are all
    # outside B (their y and z are 0 or 1).
    assert int(ip.inside[0]) == 4
    assert float(ip.depth_max[0]) == pytest.approx(0.1, abs=1e-6)
    assert float(ip.depth_mean[0]) == pytest.approx(0.1, abs=1e-6)
    vc, _ = _cube([2, 2, 2], [3, 3, 3])
    ip = M.interpenetration(va[None], vc[None], cl)
    assert int(ip.inside[0]) == 0 and float(ip.depth_max[0]) == 0.0


def test_intersection_volume_of_boxes():
    va, f = _cube([0, 0, 0], [1, 1, 1])
    vb, _ = _cube([0.5, 0.25, 0.0], [1.5, 1.25, 1.0])
    cl = M.cluster_faces(f, va, size=4)
    vol = M.intersection_volume(np.stack([va, va]), np.stack([vb, va + 5.0]), cl, resolution=8)
    # Overlap 0.5 x 0.75 x 1; every sample lies strictly inside both boxes. Disjoint boxes: 0.
    np.testing.assert_allclose(np.asarray(vol), [0.375, 0.0], atol=1e-6)
