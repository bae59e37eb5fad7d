"""Cameras: parity with OpenCV (cv2.projectPoints, cv2.fisheye), undistortion, NaN-free gradients, batching, jit."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from h4djax.geometry import (
    Cameras,
    camera_centers,
    from_numpy,
    project,
    to_numpy,
    undistort_points,
    world_to_camera,
)
from h4djax.geometry.cameras_np import camera_centers_np, project_np, undistort_points_np, world_to_camera_np

@pytest.fixture(autouse=True, scope="module")
def _x64():
    """This module checks float64 exactness; the flag is scoped to the module so it cannot leak into others."""
    with jax.enable_x64(True):
        yield


def look_at(center: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """World->camera R, t of a camera at `center` whose +z axis points at `target` (random roll)."""
    z = target - center
    z /= np.linalg.norm(z)
    a = rng.normal(size=3)
    x = np.cross(a, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center


def random_rig(rng: np.random.Generator, n: int, fisheye: np.ndarray | bool, n_coeffs: int = 8) -> Cameras:
    """`n` cameras 3-6 m from the origin looking at it, random intrinsics and moderate distortion (float64)."""
    fe = np.broadcast_to(np.asarray(fisheye, bool), (n,))
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = rng.uniform(400, 1500, n)
    K[:, 1, 1] = K[:, 0, 0] * rng.uniform(0.95, 1.05, n)
    K[:, 0, 2] = rng.uniform(300, 700, n)
    K[:, 1, 2] = rng.uniform(200, 500, n)
    K[:, 2, 2] = 1
    dist = np.zeros((n, 8))
    for c in range(n):
        if fe[c]:
            dist[c, :4] = rng.uniform(-0.05, 0.05, 4)
        else:
            d = np.concatenate([rng.uniform(-0.3, 0.3, 2), rng.uniform(-0.005, 0.005, 2), rng.uniform(-0.05, 0.05, 1),
                                rng.uniform(-0.1, 0.1, 3)])
            d[n_coeffs:] = 0
            dist[c] = d
    Rs, ts = [], []
    for _ in range(n):
        direction = rng.normal(size=3)
        center = direction / np.linalg.norm(direction) * rng.uniform(3, 6)
        R, t = look_at(center, rng.normal(scale=0.1, size=3), rng)
        Rs.append(R)
        ts.append(t)
    size = np.stack([2 * K[:, 0, 2], 2 * K[:, 1, 2]], -1)
    return from_numpy(K, dist, np.stack(Rs), np.stack(ts), size, fe, dtype=jnp.float64)


def cv2_project(cams: Cameras, c: int, X: np.ndarray) -> np.ndarray:
    h = to_numpy(cams)
    rvec = cv2.Rodrigues(h.R[c])[0]
    if h.fisheye[c]:
        return cv2.fisheye.projectPoints(X[None], rvec, h.t[c], h.K[c], h.dist[c, :4])[0][0]
    return cv2.projectPoints(X, rvec, h.t[c], h.K[c], h.dist[c])[0][:, 0]


@pytest.mark.parametrize("fisheye,n_coeffs", [(False, 4), (False, 5), (False, 8), (True, 4)])
def test_project_matches_opencv(fisheye, n_coeffs):
    rng = np.random.default_rng(1 + n_coeffs + 10 * fisheye)
    cams = random_rig(rng, 12, fisheye, n_coeffs)
    X = rng.uniform(-1, 1, size=(200, 3))
    uv, ok = project(cams, X)
    assert uv.shape == (12, 200, 2) and ok.shape == (12, 200)
    assert bool(ok.all())
    for c in range(12):
        np.testing.assert_allclose(np.asarray(uv[c]), cv2_project(cams, c, X), atol=1e-6, rtol=0)


def test_project_mixed_rig_matches_per_camera():
    rng = np.random.default_rng(7)
    fe = np.array([True, False, True, False, False])
    cams = random_rig(rng, 5, fe)
    X = rng.uniform(-1, 1, size=(50, 3))
    uv, _ = project(cams, X)
    for c in range(5):
        np.testing.assert_allclose(np.asarray(uv[c]), cv2_project(cams, c, X), atol=1e-6, rtol=0)
        one, _ = project(cams.select([c]), X)
        np.testing.assert_allclose(np.asarray(one[0]), np.asarray(uv[c]), atol=1e-9)


def test_numpy_twins_match_jax():
    rng = np.random.default_rng(3)
    cams = random_rig(rng, 6, np.array([True, False] * 3))
    X = rng.uniform(-1, 1, size=(4, 7, 3))
    uv, ok = project(cams, X)
    uv_np, ok_np = project_np(to_numpy(cams), X)
    np.testing.assert_allclose(uv_np, np.asarray(uv), atol=1e-8)
    np.testing.assert_array_equal(ok_np, np.asarray(ok))
    np.testing.assert_allclose(world_to_camera_np(cams, X), np.asarray(world_to_camera(cams, X)), atol=1e-12)
    np.testing.assert_allclose(camera_centers_np(cams), np.asarray(camera_centers(cams)), atol=1e-12)
    np.testing.assert_allclose(undistort_points_np(cams, uv_np), np.asarray(undistort_points(cams, uv)), atol=1e-9)


def normalized_truth(cams: Cameras, X: np.ndarray) -> np.ndarray:
    Xc = np.asarray(world_to_camera(cams, X))
    return Xc[..., :2] / Xc[..., 2:]


@pytest.mark.parametrize("fisheye", [False, True])
def test_undistort_round_trip_and_opencv(fisheye):
    rng = np.random.default_rng(11 + fisheye)
    cams = random_rig(rng, 8, fisheye)
    X = rng.uniform(-1, 1, size=(300, 3))
    uv, _ = project(cams, X)
    xy = np.asarray(undistort_points(cams, uv))
    truth = normalized_truth(cams, X)
    fx = np.asarray(cams.K)[:, 0, 0][:, None, None]
    # Round trip to < 1e-6 px (normalized error times the focal length).
    assert np.abs((xy - truth) * fx).max() < 1e-6
    h = to_numpy(cams)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    for c in range(8):
        pts = np.asarray(uv[c]).reshape(-1, 1, 2)
        if fisheye:
            ref = cv2.fisheye.undistortPoints(pts, h.K[c], h.dist[c, :4], criteria=crit)[:, 0]
        else:
            ref = cv2.undistortPoints(pts, h.K[c], h.dist[c], None, None, criteria=crit)[:, 0]
        assert np.abs((xy[c] - ref) * h.K[c, 0, 0]).max() < 1e-6


def test_undistort_beats_opencv_default_iterations():
    """cv2's default 5 fixed-point steps leave visible error on a strong lens; ours does not (why we use Newton)."""
    rng = np.random.default_rng(5)
    cams = from_numpy(np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]]), [-0.4, 0.2, 0.0, 0.0, -0.05],
                      np.eye(3), [0, 0, 2.0], [640, 480], dtype=jnp.float64)
    X = np.c_[rng.uniform(-1, 1, (100, 2)), np.zeros(100)]
    uv, _ = project(cams, X)
    truth = normalized_truth(cams, X)[0]
    ours = np.asarray(undistort_points(cams, uv))[0]
    h = to_numpy(cams)
    cv_default = cv2.undistortPoints(np.asarray(uv[0])[:, None], h.K[0], h.dist[0])[:, 0]
    assert np.abs(ours - truth).max() * 600 < 1e-6
    assert np.abs(cv_default - truth).max() * 600 > 1e-3


def test_behind_camera_flag_and_finite():
    cams = from_numpy(np.array([[[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]] * 2), np.zeros((2, 4)),
                      np.stack([np.eye(3)] * 2), np.zeros((2, 3)), [[640, 480]] * 2, [False, True], dtype=jnp.float64)
    X = np.array([[0.1, 0.2, 2.0], [0.1, 0.2, -2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1e-9], [0.0, 0.0, -1.0]])
    uv, ok = project(cams, X)
    np.testing.assert_array_equal(np.asarray(ok), [[True, False, False, False, False]] * 2)
    assert np.isfinite(np.asarray(uv)).all()
    grads = jax.grad(lambda x: project(cams, x)[0].sum())(jnp.asarray(X))
    assert np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize("fisheye", [False, True])
def test_gradients_finite_at_principal_point(fisheye):
    """r = 0 (point on the optical axis / pixel at the principal point): atan(r)/r and |x| must not NaN."""
    rng = np.random.default_rng(2)
    cams = random_rig(rng, 1, fisheye)
    h = to_numpy(cams)
    X_axis = camera_centers(cams)[0] + 2.5 * jnp.asarray(h.R[0, 2])  # on the optical axis

    def f_point(x):
        return project(cams, x)[0].sum()

    def f_cams(c):
        return project(c, X_axis)[0].sum()

    gX = jax.grad(f_point)(X_axis)
    gC = jax.grad(f_cams, allow_int=True)(cams)  # size/fisheye are integer leaves
    assert np.isfinite(np.asarray(gX)).all()
    for leaf in jax.tree_util.tree_leaves(gC):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert np.isfinite(np.asarray(leaf)).all()
    pp = jnp.asarray(h.K[0, :2, 2])[None, None]
    xy = undistort_points(cams, pp)
    np.testing.assert_allclose(np.asarray(xy), 0.0, atol=1e-15)
    gU = jax.grad(lambda uv: undistort_points(cams, uv).sum())(pp)
    assert np.isfinite(np.asarray(gU)).all()
    # At the principal point the undistortion Jacobian is diag(1/fx, 1/fy).
    np.testing.assert_allclose(np.asarray(gU)[0, 0], [1 / h.K[0, 0, 0], 1 / h.K[0, 1, 1]], rtol=1e-9)
    # Also exactly zero pixel in a fisheye model's Taylor branch vs. just outside it: continuous.
    eps_px = 1e-5
    a = np.asarray(undistort_points(cams, pp + eps_px))[0, 0]
    np.testing.assert_allclose(a, [eps_px / h.K[0, 0, 0], eps_px / h.K[0, 1, 1]], rtol=1e-6)


@pytest.mark.parametrize("fisheye", [False, True])
def test_grad_vs_finite_differences(fisheye):
    rng = np.random.default_rng(4)
    cams = random_rig(rng, 2, fisheye)
    X = jnp.asarray(rng.uniform(-0.5, 0.5, size=(3, 3)))
    check_grads(lambda x: project(cams, x)[0], (X,), order=1, modes=("fwd", "rev"), eps=1e-6)
    check_grads(lambda K, d, R, t: project(cams.replace(K=K, dist=d, R=R, t=t), X)[0],
                (cams.K, cams.dist, cams.R, cams.t), order=1, modes=("fwd", "rev"), eps=1e-6)
    uv, _ = project(cams, X)
    check_grads(lambda p: undistort_points(cams, p), (uv,), order=1, modes=("fwd", "rev"), eps=1e-4)
    check_grads(lambda d: undistort_points(cams.replace(dist=d), uv), (cams.dist,), order=1, modes=("rev",),
                eps=1e-6)


@settings(max_examples=8, deadline=None)
@given(batch=st.lists(st.integers(1, 3), min_size=0, max_size=3))
def test_batch_shapes(batch):
    rng = np.random.default_rng(len(batch))
    cams = random_rig(rng, 3, np.array([False, True, False]))
    X = rng.uniform(-1, 1, size=tuple(batch) + (3,))
    uv, ok = project(cams, X)
    assert uv.shape == (3, *batch, 2) and ok.shape == (3, *batch)
    assert world_to_camera(cams, X).shape == (3, *batch, 3)
    assert undistort_points(cams, uv).shape == (3, *batch, 2)
    flat, _ = project(cams, X.reshape(-1, 3))
    np.testing.assert_allclose(np.asarray(uv).reshape(3, -1, 2), np.asarray(flat), atol=1e-10)


def test_jit_does_not_recompile_on_data_change():
    f = jax.jit(lambda c, x: (project(c, x)[0], undistort_points(c, project(c, x)[0])))
    rng = np.random.default_rng(9)
    X = rng.uniform(-1, 1, size=(10, 3))
    a = random_rig(rng, 4, np.array([True, False, False, True]))
    b = random_rig(rng, 4, np.array([False, False, True, True]))  # different models, same program
    f(a, X)
    f(b, X + 1)
    f(b.replace(dist=b.dist * 0.5), X)
    assert f._cache_size() == 1


def test_select_and_helpers():
    rng = np.random.default_rng(0)
    cams = random_rig(rng, 4, False)
    cams = cams.replace(names=("a", "b", "c", "d"))
    sub = cams.select(["c", "a"])
    assert sub.names == ("c", "a") and sub.num_cams == 2
    np.testing.assert_array_equal(np.asarray(sub.K[0]), np.asarray(cams.K[2]))
    assert cams.select(1).names == ("b",)
    assert cams.select(np.array([True, False, False, True])).names == ("a", "d")
    assert cams.select(slice(1, 3)).names == ("b", "c")
    with pytest.raises(KeyError, match="'z'"):
        cams.select(["z"])
    host = to_numpy(cams)
    assert isinstance(host.K, np.ndarray) and host.K.dtype == np.float64
    centers = np.asarray(camera_centers(cams))
    np.testing.assert_allclose(np.einsum("cij,cj->ci", host.R, centers) + host.t, 0, atol=1e-12)


def test_float32_default_dtype_works():
    """The library runs in float32 (x64 is on in this module, so ask for float32 explicitly)."""
    rng = np.random.default_rng(1)
    c64 = random_rig(rng, 3, np.array([True, False, True]))
    c32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, c64)
    X = rng.uniform(-1, 1, size=(20, 3))
    uv32, _ = project(c32, jnp.asarray(X, jnp.float32))
    uv64, _ = project(c64, X)
    assert uv32.dtype == jnp.float32
    assert np.abs(np.asarray(uv32) - np.asarray(uv64)).max() < 2e-3
    xy32 = undistort_points(c32, uv32)
    assert np.isfinite(np.asarray(xy32)).all()
    assert np.abs(np.asarray(xy32) - normalized_truth(c64, X)).max() < 1e-5
