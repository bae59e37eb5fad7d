"""Rotation conversions: values vs scipy, round trips, finite-difference vs autodiff Jacobians (forward and reverse),
finite gradients at angle 0 and pi, batch shapes. float64 inside this module only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from h4djax.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_sixd,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    safe_norm,
    sixd_to_matrix,
)


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def _random_rotvecs(rng, n, max_angle=np.pi):
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return axis * rng.uniform(0, max_angle, size=(n, 1))


def _special_rotvecs():
    """Zero, tiny (around the Taylor thresholds), moderate, near pi and exactly pi about several axes."""
    axes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1] / np.sqrt(3), [0.3, -0.5, 0.81]])
    axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    angles = [0.0, 1e-12, 1e-8, 1e-5, 1e-4, 1e-3, 3e-2, 0.04, 1.0, 3.0, np.pi - 1e-4, np.pi - 1e-7, np.pi]
    return np.array([a * ax for ax in axes for a in angles])


def _central_diff_jac(f, x, h=1e-6):
    x = np.array(x, np.float64)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x).reshape(-1)
        e[i] = h
        e = e.reshape(x.shape)
        cols.append((np.array(f(x + e)) - np.array(f(x - e))).reshape(-1) / (2 * h))
    return np.stack(cols, axis=-1)


_jacfwd_exp = jax.jit(jax.jacfwd(axis_angle_to_matrix))
_jacrev_exp = jax.jit(jax.jacrev(axis_angle_to_matrix))
_logexp = lambda x: matrix_to_axis_angle(axis_angle_to_matrix(x))  # noqa: E731
_jacfwd_logexp = jax.jit(jax.jacfwd(_logexp))
_jacrev_logexp = jax.jit(jax.jacrev(_logexp))


def test_axis_angle_to_matrix_matches_scipy():
    rng = np.random.default_rng(0)
    aa = np.concatenate([_random_rotvecs(rng, 200), _special_rotvecs()])
    R = np.array(axis_angle_to_matrix(jnp.array(aa)))
    np.testing.assert_allclose(R, Rotation.from_rotvec(aa).as_matrix(), atol=1e-14)


def test_axis_angle_quaternion_matrix_consistent():
    rng = np.random.default_rng(1)
    aa = np.concatenate([_random_rotvecs(rng, 100), _special_rotvecs()])
    q = np.array(axis_angle_to_quaternion(jnp.array(aa)))
    q_scipy = Rotation.from_rotvec(aa).as_quat()  # x, y, z, w
    q_scipy = np.concatenate([q_scipy[:, 3:], q_scipy[:, :3]], axis=1)
    sign = np.sign(np.sum(q * q_scipy, axis=1, keepdims=True))
    np.testing.assert_allclose(q, sign * q_scipy, atol=1e-14)
    np.testing.assert_allclose(np.array(quaternion_to_matrix(jnp.array(q))),
                               Rotation.from_rotvec(aa).as_matrix(), atol=1e-14)
    np.testing.assert_allclose(np.array(quaternion_to_axis_angle(jnp.array(q))),
                               np.array(matrix_to_axis_angle(jnp.array(Rotation.from_rotvec(aa).as_matrix()))),
                               atol=1e-9)


def test_matrix_to_axis_angle_round_trip_including_pi():
    rng = np.random.default_rng(2)
    aa = np.concatenate([_random_rotvecs(rng, 300), _special_rotvecs()])
    R = Rotation.from_rotvec(aa).as_matrix()
    aa2 = np.array(matrix_to_axis_angle(jnp.array(R)))
    # Same rotation (at exactly pi the axis sign may flip): compare matrices, and vectors away from pi.
    np.testing.assert_allclose(Rotation.from_rotvec(aa2).as_matrix(), R, atol=1e-12)
    away = np.linalg.norm(aa, axis=1) < np.pi - 1e-3
    np.testing.assert_allclose(aa2[away], aa[away], atol=1e-12)
    assert np.all(np.linalg.norm(aa2, axis=1) <= np.pi + 1e-12)
    q = np.array(matrix_to_quaternion(jnp.array(R)))
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-14)


def test_matrix_to_axis_angle_float32_accuracy_near_zero_and_pi():
    with jax.enable_x64(False):
        aa = _special_rotvecs()
        R = Rotation.from_rotvec(aa).as_matrix().astype(np.float32)
        aa2 = np.array(matrix_to_axis_angle(jnp.array(R)))
        assert aa2.dtype == np.float32 and np.all(np.isfinite(aa2))
        np.testing.assert_allclose(Rotation.from_rotvec(aa2.astype(np.float64)).as_matrix(), R, atol=2e-6)
        Rb = np.array(axis_angle_to_matrix(jnp.array(aa, jnp.float32)))
        np.testing.assert_allclose(Rb, Rotation.from_rotvec(aa).as_matrix(), atol=1e-6)


@pytest.mark.parametrize("aa", [np.zeros(3), np.array([1e-9, -2e-9, 0.5e-9]), np.array([0.3, -0.2, 0.9]),
                                np.array([0.0, 0.0, np.pi]), np.array([np.pi, 0.0, 0.0]) * 0.999999,
                                np.array([1.0, 1.0, 1.0]) / np.sqrt(3) * np.pi])
def test_axis_angle_to_matrix_jacobian_matches_finite_differences(aa):
    f = jax.jit(axis_angle_to_matrix)
    jf = np.array(_jacfwd_exp(aa)).reshape(9, 3)
    jr = np.array(_jacrev_exp(aa)).reshape(9, 3)
    assert np.all(np.isfinite(jf)) and np.all(np.isfinite(jr))
    np.testing.assert_allclose(jf, jr, atol=1e-12)
    np.testing.assert_allclose(jf, _central_diff_jac(f, aa), atol=1e-8)
    if not np.any(aa):  # at zero dR/dw_k = [e_k]_x exactly
        # column i of [e_k]_x is e_k x e_i
        K = np.stack([np.stack([np.cross(np.eye(3)[k], np.eye(3)[i]) for i in range(3)], axis=1) for k in range(3)],
                     axis=-1)
        np.testing.assert_allclose(jf.reshape(3, 3, 3), K, atol=1e-14)


@pytest.mark.parametrize("aa", [np.zeros(3), np.array([1e-9, 2e-9, -1e-9]), np.array([0.01, 0.02, -0.03]),
                                np.array([0.3, -0.2, 0.9]), np.array([2.0, -1.0, 0.5]),
                                np.array([0.0, 0.0, np.pi - 1e-5]), np.array([1.0, -1.0, 1.0]) / np.sqrt(3) * 3.1])
def test_log_of_exp_has_identity_jacobian(aa):
    """matrix_to_axis_angle(axis_angle_to_matrix(w)) == w for |w| < pi, so its Jacobian must be I (fwd and rev),
    including at w = 0 where naive formulas give NaN."""
    jf = np.array(_jacfwd_logexp(jnp.array(aa)))
    jr = np.array(_jacrev_logexp(jnp.array(aa)))
    tol = 1e-9 if np.linalg.norm(aa) < 3.0 else 1e-4  # near pi the log map's conditioning grows like 1/sin
    np.testing.assert_allclose(jf, np.eye(3), atol=tol)
    np.testing.assert_allclose(jr, np.eye(3), atol=tol)


@pytest.mark.parametrize("angle", [0.0, np.pi])
@pytest.mark.parametrize("axis", [np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([0.48, -0.6, 0.64])])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@jax.jit
def _all_jacobians(aa):
    R = axis_angle_to_matrix(aa)
    loss = lambda w: jnp.sum(matrix_to_axis_angle(axis_angle_to_matrix(w)) ** 2)  # noqa: E731
    return (
        jax.jacrev(axis_angle_to_matrix)(aa),
        jax.jacrev(matrix_to_axis_angle)(R),
        jax.jacfwd(matrix_to_axis_angle)(R),
        jax.jacrev(matrix_to_quaternion)(R),
        jax.jacrev(axis_angle_to_quaternion)(aa),
        jax.jacrev(quaternion_to_axis_angle)(axis_angle_to_quaternion(aa)),
        jax.jacrev(sixd_to_matrix)(matrix_to_sixd(R)),
        # a loss through the whole chain (what a fit started at zero pose differentiates)
        jax.grad(loss)(aa),
    )


@pytest.mark.parametrize("angle", [0.0, np.pi])
@pytest.mark.parametrize("axis", [np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([0.48, -0.6, 0.64])])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_gradients_finite_at_zero_and_pi(angle, axis, dtype):
    aa = jnp.asarray(axis * angle, dtype)
    for g in _all_jacobians(aa):
        assert g.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(g)))


def test_matrix_to_axis_angle_jacobian_matches_finite_differences_on_manifold():
    """d log(R exp(delta)) / d delta vs central differences, at random rotations and at the identity."""
    rng = np.random.default_rng(3)
    g = jax.jit(lambda R0, d: matrix_to_axis_angle(R0 @ axis_angle_to_matrix(d)))
    jac = jax.jit(jax.jacfwd(g, argnums=1))
    for aa in [np.zeros(3), *_random_rotvecs(rng, 4, max_angle=2.5)]:
        R0 = jnp.array(Rotation.from_rotvec(aa).as_matrix())
        jf = np.array(jac(R0, jnp.zeros(3)))
        np.testing.assert_allclose(jf, _central_diff_jac(lambda d: g(R0, d), np.zeros(3), h=1e-6), atol=1e-7)


def test_sixd_round_trip_and_orthonormal():
    rng = np.random.default_rng(4)
    R = Rotation.from_rotvec(_random_rotvecs(rng, 100)).as_matrix()
    np.testing.assert_allclose(np.array(sixd_to_matrix(matrix_to_sixd(jnp.array(R)))), R, atol=1e-14)
    d6 = rng.normal(size=(100, 6))
    M = np.array(sixd_to_matrix(jnp.array(d6)))
    np.testing.assert_allclose(M @ np.swapaxes(M, -1, -2), np.broadcast_to(np.eye(3), M.shape), atol=1e-13)
    np.testing.assert_allclose(np.linalg.det(M), 1.0, atol=1e-13)
    # First column is the normalized first 3-vector (Zhou et al. 2019, column convention).
    np.testing.assert_allclose(M[:, :, 0], d6[:, :3] / np.linalg.norm(d6[:, :3], axis=1, keepdims=True), atol=1e-14)


def test_sixd_jacobian_and_degenerate_input():
    d6 = np.array([0.9, 0.1, -0.3, 0.2, 1.1, 0.4])
    f = jax.jit(sixd_to_matrix)
    jrev = jax.jit(jax.jacrev(sixd_to_matrix))
    np.testing.assert_allclose(np.array(jax.jit(jax.jacfwd(sixd_to_matrix))(d6)).reshape(9, 6),
                               _central_diff_jac(f, d6), atol=1e-8)
    for bad in (np.zeros(6), np.array([1.0, 0, 0, 2.0, 0, 0])):
        assert bool(jnp.all(jnp.isfinite(f(bad))))
        assert bool(jnp.all(jnp.isfinite(jrev(bad))))


def test_safe_norm_zero_gradient():
    g = jax.grad(lambda x: safe_norm(x))(jnp.zeros(3))
    np.testing.assert_array_equal(np.array(g), 0.0)
    np.testing.assert_allclose(float(safe_norm(jnp.array([3.0, 4.0]))), 5.0)


@jax.jit
def _shape_outputs(aa):
    R = axis_angle_to_matrix(aa)
    return R, matrix_to_axis_angle(R), matrix_to_quaternion(R), matrix_to_sixd(R), sixd_to_matrix(matrix_to_sixd(R))


@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from([(), (1,), (4,), (2, 3), (2, 1, 3)]), seed=st.integers(0, 2**31 - 1))
def test_batch_shapes(shape, seed):
    rng = np.random.default_rng(seed)
    aa = _random_rotvecs(rng, int(np.prod(shape)) if shape else 1).reshape(*shape, 3)
    R, aa2, q, d6, R2 = _shape_outputs(jnp.asarray(aa))
    assert R.shape == (*shape, 3, 3) and R2.shape == (*shape, 3, 3)
    assert aa2.shape == (*shape, 3) and q.shape == (*shape, 4) and d6.shape == (*shape, 6)
    np.testing.assert_allclose(np.array(aa2), aa, atol=1e-9)
    np.testing.assert_allclose(np.array(R2), np.array(R), atol=1e-12)
