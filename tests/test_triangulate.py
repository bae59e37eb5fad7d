"""Robust triangulation: exact recovery, parity with the EgoHumans-style numpy reference, bad input, no recompiles,
gradients vs finite differences, chunking, DLT/Jacobi kernels."""

import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares

from h4djax.config import TriangulationConfig
from h4djax.geometry import from_numpy, project, undistort_points
from h4djax.triangulate import (
    Triangulation,
    TriangulationParams,
    to_joints3d,
    triangulate,
    triangulate_normalized,
)
from h4djax.triangulate.dlt import dlt_point, sym4_smallest_eigvec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from reference_triangulate import reference_triangulate  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def _x64():
    """This module checks float64 exactness; the flag is scoped to the module so it cannot leak into others."""
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------------------------------
# Fixtures: a random rig with OpenCV and fisheye cameras, random 3D joints, exact projections
# ------------------------------------------------------------------------------------------------------------------

def _look_at(center, target, rng):
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(rng.normal(size=3), z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return R, -R @ center


def random_rig(rng, n, dtype=jnp.float64):
    """`n` cameras 3.5-6 m around the origin (ring with height jitter), random intrinsics, every third camera a
    cv2.fisheye one, the others OpenCV rational + tangential distortion."""
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = rng.uniform(700, 1400, n)
    K[:, 1, 1] = K[:, 0, 0] * rng.uniform(0.97, 1.03, n)
    K[:, 0, 2] = rng.uniform(900, 1000, n)
    K[:, 1, 2] = rng.uniform(500, 580, n)
    K[:, 2, 2] = 1
    fisheye = np.arange(n) % 3 == 1
    dist = np.zeros((n, 8))
    dist[:, :5] = rng.uniform([-0.2, -0.05, -0.002, -0.002, -0.02], [0.1, 0.05, 0.002, 0.002, 0.02], (n, 5))
    dist[:, 5:] = rng.uniform(-0.02, 0.02, (n, 3))
    dist[fisheye] = 0
    dist[fisheye, :4] = rng.uniform(-0.04, 0.04, (fisheye.sum(), 4))
    Rs, ts = [], []
    for c in range(n):
        a = 2 * np.pi * c / n + rng.uniform(-0.2, 0.2)
        r = rng.uniform(3.5, 6.0)
        R, t = _look_at(np.array([r * np.cos(a), r * np.sin(a), rng.uniform(0.5, 2.5)]),
                        rng.normal(scale=0.2, size=3) + [0, 0, 1.0], rng)
        Rs.append(R)
        ts.append(t)
    return from_numpy(K, dist, np.array(Rs), np.array(ts), np.tile([1920, 1080], (n, 1)), fisheye, dtype=dtype)


def make_scene(rng, cams, F=4, P=2, J=17, conf=(0.6, 1.0)):
    X = rng.normal(scale=0.35, size=(F, P, J, 3)) + [0, 0, 1.0]
    uv, in_front = project(cams, jnp.asarray(X))
    assert bool(jnp.all(in_front))
    uv = np.moveaxis(np.asarray(uv), 0, 1)  # [F, C, P, J, 2]
    c = rng.uniform(*conf, size=uv.shape[:-1])
    return X, np.concatenate([uv, c[..., None]], axis=-1)


@pytest.fixture(scope="module")
def rig8():
    rng = np.random.default_rng(1)
    cams = random_rig(rng, 8)
    X, kp = make_scene(rng, cams)
    return cams, X, kp


@functools.cache
def params():
    """Built on first use, inside the module's float64 scope (not at import)."""
    return TriangulationParams.from_config(dtype=jnp.float64)


def _np(res: Triangulation):
    return jax.tree.map(np.asarray, res)


# ------------------------------------------------------------------------------------------------------------------
# Exact recovery, parity with the reference
# ------------------------------------------------------------------------------------------------------------------

def test_exact_recovery_noise_free(rig8):
    cams, X, kp = rig8
    res = _np(triangulate(cams, jnp.asarray(kp), params()))
    assert res.valid.all()
    err = np.linalg.norm(res.xyz - X, axis=-1)
    assert err.mean() < 1e-6 and err.max() < 1e-6, err.max()
    assert res.reproj_err_px.max() < 1e-6
    assert (res.n_inliers == 8).all() and res.inliers.all() and (res.n_candidates == 8).all()
    j4 = np.asarray(to_joints3d(triangulate(cams, jnp.asarray(kp), params())))
    assert j4.shape == X.shape[:-1] + (4,)
    np.testing.assert_allclose(j4[..., :3], res.xyz)
    assert (j4[..., 3] == 1).all()


def test_float32_long_sequence_exact_and_memory_bounded(rig8):
    """float32, default config, 640 frames in 16-frame chunks: exact recovery to float32 round-off, and the
    compiled program's temporaries stay those of one chunk. Unchunked, the pair stage alone would hold
    640 x 34 tracks x 28 pairs x 48 floats = 117 MB here (20 cameras: 1.9 GB); the bound is 16 MB."""
    cams, X, kp = rig8
    cams32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32) if jnp.asarray(a).dtype == jnp.float64 else a, cams)
    reps = 160
    kp32 = jnp.asarray(np.tile(kp, (reps, 1, 1, 1, 1)), jnp.float32)
    cfg = TriangulationConfig(frame_chunk=16)
    params = TriangulationParams.from_config(cfg, dtype=jnp.float32)
    compiled = triangulate.lower(cams32, kp32, params, frame_chunk=16).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 16 * 2**20
    res = _np(compiled(cams32, kp32, params))
    assert res.xyz.dtype == np.float32 and res.valid.all()
    err = np.linalg.norm(res.xyz - np.tile(X, (reps, 1, 1, 1)), axis=-1)
    assert err.max() < 2e-4, err.max()  # float32 round-off of metre-scale coordinates


def _noisy(rng, kp, sigma_px=1.5, outlier_frac=0.15):
    kp = kp.copy()
    kp[..., :2] += rng.normal(scale=sigma_px, size=kp[..., :2].shape)
    out = rng.uniform(size=kp.shape[:-1]) < outlier_frac
    kp[..., :2][out] += rng.normal(scale=120.0, size=(out.sum(), 2))
    kp[..., 2] = rng.uniform(0.3, 1.0, size=kp.shape[:-1])  # some views below the 0.5 candidate threshold
    return kp


def _normalized(cams, kp):
    xn = undistort_points(cams, jnp.asarray(np.moveaxis(kp[..., :2], 1, 0)))
    return np.moveaxis(np.asarray(xn), 0, 1)


def _cost(cams, xn, X, inliers):
    """Sum of squared normalized-plane residuals over the inlier views (the refinement's objective)."""
    Xc = np.einsum("cij,fpkj->fpkci", np.asarray(cams.R), X) + np.asarray(cams.t)
    proj = Xc[..., :2] / Xc[..., 2:]
    r = np.moveaxis(xn, 1, -2) - proj
    return np.sum(np.sum(r**2, -1) * inliers, -1)


def test_parity_with_reference_outliers(rig8):
    """Same valid flags, same inlier sets and the same least-squares optimum as the per-joint numpy/scipy
    reference, on noisy data with 15% gross outliers (normalize=False: the reference's algebraic DLT exactly)."""
    cams, X, kp = rig8
    rng = np.random.default_rng(7)
    kpn = _noisy(rng, kp)
    xn = _normalized(cams, kpn)
    ref = reference_triangulate(np.asarray(cams.R), np.asarray(cams.t), xn, kpn[..., 2])
    xyz, valid, inl, n_inl, n_cand = map(np.asarray, triangulate_normalized(
        cams.R, cams.t, xn, kpn[..., 2], jnp.full(8, 0.01), params(), normalize=False, refine_iters=10))
    np.testing.assert_array_equal(valid, ref["valid"])
    np.testing.assert_array_equal(inl, ref["inliers"])
    assert (~valid).sum() > 0 and valid.sum() > 50  # the fixture exercises both branches
    np.testing.assert_array_equal(n_inl, ref["inliers"].sum(-1))
    # Same optimum. scipy stops at its default tolerances (ftol 1e-8), a few 0.1 mm short of the minimum on
    # ill-conditioned joints (2 inlier views with a large residual), so: our cost is never higher, and our point
    # is the minimizer found by a tightly converged least_squares on the same inliers.
    c_ours = _cost(cams, xn, xyz, inl)[valid]
    c_ref = _cost(cams, xn, ref["xyz"], ref["inliers"])[valid]
    assert np.all(c_ours <= c_ref * (1 + 1e-9) + 1e-15)
    R, t = np.asarray(cams.R), np.asarray(cams.t)
    d = []
    for f, p, k in np.argwhere(valid):
        m = inl[f, p, k]

        def resid(x):
            q = np.einsum("cij,j->ci", R[m], x) + t[m]
            return (xn[f, m, p, k] - q[:, :2] / q[:, 2:]).ravel()

        opt = least_squares(resid, ref["xyz"][f, p, k], xtol=1e-15, ftol=1e-15, gtol=1e-15).x
        d.append(np.linalg.norm(xyz[f, p, k] - opt))
    d = np.array(d)
    assert d.max() < 1e-4 and np.mean(d < 1e-7) > 0.95, (d.max(), np.mean(d < 1e-7))


def test_normalized_dlt_matches_reference_statistically(rig8):
    """Default pipeline (pixels in, world-normalized DLT): valid flags identical to the reference; the pair DLTs
    differ at the noise level, so inlier sets agree on most joints, and the accuracy is the same."""
    cams, X, kp = rig8
    rng = np.random.default_rng(8)
    kpn = _noisy(rng, kp)
    xn = _normalized(cams, kpn)
    ref = reference_triangulate(np.asarray(cams.R), np.asarray(cams.t), xn, kpn[..., 2])
    res = _np(triangulate(cams, jnp.asarray(kpn), params()))
    np.testing.assert_array_equal(res.valid, ref["valid"])
    valid = res.valid
    assert (res.inliers == ref["inliers"]).all(-1)[valid].mean() > 0.9
    e_ours = np.linalg.norm(res.xyz - X, axis=-1)[valid]
    e_ref = np.linalg.norm(ref["xyz"] - X, axis=-1)[valid]
    assert np.median(e_ours) < 1.2 * np.median(e_ref)
    # reproj_err_px: mean pixel distance over the inlier views, recomputed here with the distorted projection
    uv_hat = np.moveaxis(np.asarray(project(cams, jnp.asarray(res.xyz))[0]), 0, -2)  # [F, P, K, C, 2]
    dist = np.linalg.norm(uv_hat - np.moveaxis(kpn[..., :2], 1, -2), axis=-1)
    want = np.sum(dist * res.inliers, -1) / np.maximum(res.inliers.sum(-1), 1)
    np.testing.assert_allclose(res.reproj_err_px[valid], want[valid], rtol=1e-9)


def test_pixel_threshold_and_min_views(rig8):
    cams, X, kp = rig8
    rng = np.random.default_rng(9)
    kpn = _noisy(rng, kp)
    xn = _normalized(cams, kpn)
    f = 0.5 * (np.asarray(cams.K)[:, 0, 0] + np.asarray(cams.K)[:, 1, 1])
    px = 12.0
    # inlier_eps_px: full pixel-scale distance < px  <=>  e_v < 0.5 * px / f (per camera)
    res = _np(triangulate(cams, jnp.asarray(kpn), params().replace(inlier_eps_px=jnp.asarray(px, jnp.float64))))
    ref = reference_triangulate(np.asarray(cams.R), np.asarray(cams.t), xn, kpn[..., 2], eps=0.5 * px / f)
    np.testing.assert_array_equal(res.valid, ref["valid"])
    assert (res.inliers == ref["inliers"]).all(-1)[res.valid].mean() > 0.9
    base = _np(triangulate(cams, jnp.asarray(kpn), params()))  # eps 0.01 ~ 0.02 f ~ 20 px: more inliers
    assert base.n_inliers.sum() > res.n_inliers.sum()
    # min_views = 3: joints with exactly 2 candidates become invalid (reference MIN_VIEWS semantics)
    res3 = _np(triangulate(cams, jnp.asarray(kpn), params().replace(min_views=jnp.asarray(3, jnp.int32))))
    ref3 = reference_triangulate(np.asarray(cams.R), np.asarray(cams.t), xn, kpn[..., 2], min_views=3)
    np.testing.assert_array_equal(res3.valid, ref3["valid"])
    assert ((base.n_candidates == 2) & base.valid).any() and not ((res3.n_candidates == 2) & res3.valid).any()


def test_first_pair_wins_ties(rig8):
    """Views 0-3 see point A, views 4-7 see point B: pairs inside either group give a set of 4 views, so the
    first pair (0, 1) wins and the result is A; swapping the groups gives B (reference tie-break)."""
    cams, X, kp = rig8
    A, B = np.array([0.5, -0.5, 0.8]), np.array([-0.5, 0.5, 1.5])
    uvA = np.asarray(project(cams, jnp.asarray(A))[0])
    uvB = np.asarray(project(cams, jnp.asarray(B))[0])
    e_ab = 0.5 * np.linalg.norm(uvA - uvB, axis=-1) / np.asarray(cams.K)[:, 0, 0]
    assert e_ab.min() > 0.02  # no view of A is within the inlier threshold (0.01) of B: no cross-inliers
    kp = np.ones_like(kp)
    kp[0, :4, :, :, :2] = uvA[:4, None, None]
    kp[0, 4:, :, :, :2] = uvB[4:, None, None]
    kp[1, :4, :, :, :2] = uvB[:4, None, None]
    kp[1, 4:, :, :, :2] = uvA[4:, None, None]
    res = _np(triangulate(cams, jnp.asarray(kp), params()))
    np.testing.assert_allclose(res.xyz[0], np.broadcast_to(A, res.xyz[0].shape), atol=1e-9)
    np.testing.assert_allclose(res.xyz[1], np.broadcast_to(B, res.xyz[1].shape), atol=1e-9)
    assert (res.inliers[:2, ..., :4].all() and not res.inliers[:2, ..., 4:].any())


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------

def test_bad_input_is_flagged_never_nan(rig8):
    cams, X, kp = rig8
    kp = kp.copy()
    kp[0, 2, 0, 3, 0] = np.nan  # NaN coordinate: that view drops out of this joint
    kp[0, 3, 0, 4, 2] = np.nan  # NaN confidence
    kp[0, 5, 1, 6, :] = np.inf
    kp[1, 4] = np.nan  # camera 4 has no detections at all in frame 1 (NaN everything)
    kp[1, 6, :, :, 2] = 0  # camera 6 has no detections in frame 1 (conf 0)
    kp[2, :, :, :, 2] = 0  # frame 2: nobody
    kp[3, 1:, 1, :, 2] = 0  # frame 3, person 1: seen by camera 0 only
    kp[3, :, 0, 0, 2] = 0.4  # frame 3, person 0, nose: no view above the candidate threshold
    res = _np(triangulate(cams, jnp.asarray(kp), params()))
    for leaf in jax.tree.leaves(res):
        assert np.all(np.isfinite(leaf))
    assert not res.valid[2].any() and not res.valid[3, 1].any() and not res.valid[3, 0, 0]
    assert (res.xyz[~res.valid] == 0).all() and (res.n_inliers[~res.valid] == 0).all()
    assert not res.inliers[1, :, :, 4].any() and not res.inliers[1, :, :, 6].any()
    assert not res.inliers[0, 0, 3, 2] and not res.inliers[0, 0, 4, 3] and not res.inliers[0, 1, 6, 5]
    ok = res.valid.copy()
    ok[0, 0, [3, 4]] = ok[0, 1, 6] = False  # lost one view each; still exact
    err = np.linalg.norm(res.xyz - X, axis=-1)[res.valid]
    assert err.max() < 1e-6 and res.valid[[0, 1]].all()


_CAM_FIELDS = ("K", "dist", "R", "t")


def _weighted_xyz_sum(cam_params, cams, kp, w):
    return jnp.sum(triangulate(cams.replace(**cam_params), kp, params()).xyz * w)


# One compiled gradient w.r.t. both the camera parameters and the keypoints (compilation dominates test time).
_grad = jax.jit(jax.grad(_weighted_xyz_sum, argnums=(0, 2)))


def _cam_params(cams):
    return {n: getattr(cams, n) for n in _CAM_FIELDS}


def test_degenerate_geometry_no_nan(rig8):
    """Two cameras at the same place (parallel rays) are the only views: no NaN/inf in values or gradients."""
    cams, X, kp = rig8
    cams = cams.replace(R=cams.R.at[1].set(cams.R[0]), t=cams.t.at[1].set(cams.t[0]))
    uv = np.moveaxis(np.asarray(project(cams, jnp.asarray(X))[0]), 0, 1)
    kp = np.concatenate([uv, np.zeros(uv.shape[:-1] + (1,))], -1)
    kp[:, :2, ..., 2] = 1.0
    res = _np(triangulate(cams, jnp.asarray(kp), params()))
    for leaf in jax.tree.leaves(res):
        assert np.all(np.isfinite(leaf))
    assert not res.valid.any()  # the rays of coincident cameras do not determine a point
    args = (_cam_params(cams), cams, jnp.asarray(kp), jnp.ones(X.shape))
    for g in jax.tree.leaves(_grad(*args)):
        assert np.all(np.isfinite(np.asarray(g)))


# ------------------------------------------------------------------------------------------------------------------
# Compilation, chunking
# ------------------------------------------------------------------------------------------------------------------

def test_no_recompile_when_data_or_params_change(rig8):
    cams, X, kp = rig8
    kp = jnp.asarray(kp)
    triangulate(cams, kp, params())
    before = triangulate._cache_size()
    rng = np.random.default_rng(5)
    kp2 = kp.at[..., :2].add(jnp.asarray(rng.normal(size=kp[..., :2].shape)))
    p2 = TriangulationParams.from_config(
        TriangulationConfig(candidate_conf=0.3, inlier_eps=0.02, inlier_eps_px=5.0, min_views=3, min_inliers=3,
                            huber_delta=0.01), dtype=jnp.float64)
    cams2 = cams.replace(t=cams.t + 0.01, K=cams.K * 1.01)
    jax.block_until_ready(triangulate(cams2, kp2, p2))
    jax.block_until_ready(triangulate(cams, kp2, params()))
    assert triangulate._cache_size() == before


def test_frame_chunks_give_identical_results(rig8):
    cams, X, kp = rig8
    kpn = _noisy(np.random.default_rng(10), kp)
    full = _np(triangulate(cams, jnp.asarray(kpn), params()))
    part = _np(triangulate(cams, jnp.asarray(kpn), params(), frame_chunk=3))  # 4 frames -> 2 padded chunks
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(part)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# Gradients (float64, finite differences), selection held fixed
# ------------------------------------------------------------------------------------------------------------------

def test_gradients_match_finite_differences(rig8):
    """jax.grad of a weighted sum of the triangulated points w.r.t. the 2D keypoints (pixels and confidences)
    and every camera parameter (K, distortion, R, t) vs central finite differences (float64)."""
    cams, X, kp = rig8
    rng = np.random.default_rng(11)
    kpn = jnp.asarray(_noisy(rng, kp, outlier_frac=0.1))
    w = jnp.asarray(rng.normal(size=X.shape))
    res0 = triangulate(cams, kpn, params())
    assert int(res0.valid.sum()) > 100
    f = lambda c, k: float(jnp.sum(triangulate(c, k, params()).xyz * w))  # noqa: E731 (reuses the compiled forward)
    eps = 1e-6

    d_kp = jnp.asarray(rng.normal(size=kpn.shape)).at[..., 2].multiply(0.01)
    g_cams, g_kp = _grad(_cam_params(cams), cams, kpn, w)
    ad = float(jnp.vdot(g_kp, d_kp))
    fd = (f(cams, kpn + eps * d_kp) - f(cams, kpn - eps * d_kp)) / (2 * eps)
    assert abs(ad - fd) <= 1e-6 * max(1.0, abs(fd)), (ad, fd)
    # the selection is held fixed: the perturbation does not change the inlier sets
    assert bool(jnp.all(triangulate(cams, kpn + eps * d_kp, params()).inliers == res0.inliers))

    d = {
        "K": jnp.asarray(rng.normal(size=cams.K.shape)).at[:, 2].set(0).at[:, 1, 0].set(0) * 10.0,
        "dist": jnp.where(cams.dist == 0, 0.0, jnp.asarray(rng.normal(size=cams.dist.shape)) * 0.01),
        "R": jnp.asarray(rng.normal(size=cams.R.shape)) * 0.01,
        "t": jnp.asarray(rng.normal(size=cams.t.shape)) * 0.01,
    }
    ad = sum(float(jnp.vdot(g_cams[n], d[n])) for n in _CAM_FIELDS)
    step = lambda s: cams.replace(**{n: getattr(cams, n) + s * d[n] for n in _CAM_FIELDS})  # noqa: E731
    fd = (f(step(eps), kpn) - f(step(-eps), kpn)) / (2 * eps)
    assert abs(ad - fd) <= 1e-6 * max(1.0, abs(fd)), (ad, fd)


# ------------------------------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------------------------------

def test_jacobi_eigvec_matches_lapack():
    rng = np.random.default_rng(12)
    A = rng.normal(size=(500, 6, 4))
    A[:250, :, 3] = A[:250, :, :3] @ rng.normal(size=3) + 1e-6 * rng.normal(size=(250, 6))  # near-singular
    M = np.einsum("nri,nrj->nij", A, A)
    vec, w = map(np.asarray, sym4_smallest_eigvec(jnp.asarray(M)))
    lam, U = np.linalg.eigh(M)
    np.testing.assert_allclose(np.sort(w, -1), lam, rtol=1e-9, atol=1e-12 * lam.max())
    err = np.minimum(np.abs(vec - U[..., 0]).max(-1), np.abs(vec + U[..., 0]).max(-1))
    assert err.max() < 1e-8, err.max()


def test_dlt_point_weights():
    rng = np.random.default_rng(13)
    cams = random_rig(rng, 5)
    P = jnp.concatenate([cams.R, cams.t[:, :, None]], -1)
    X = jnp.asarray([0.1, 0.2, 1.1])
    Xc = jnp.einsum("cij,j->ci", cams.R, X) + cams.t
    xy = Xc[:, :2] / Xc[:, 2:]
    Xd, ok = dlt_point(P, xy, jnp.asarray([1.0, 0.5, 0.0, 1.0, 0.2]))
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(Xd), np.asarray(X), atol=1e-10)
    _, ok0 = dlt_point(P, xy, jnp.zeros(5))  # no weighted view: flagged, finite
    assert not bool(ok0)
