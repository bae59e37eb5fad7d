"""2D filter (PIPELINE.md 1.2): OKS and the drop rules vs the EgoHumans-style numpy reference, sequential duplicate
semantics, keep-one option, NaN input, no recompilation."""

import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.config import FilterConfig
from h4djax.triangulate import FilterParams, filter_keypoints, filter_with_config, oks_matrix

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from reference_triangulate import kps_oks, reference_filter_view  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def _x64():
    """This module checks float64 exactness; the flag is scoped to the module so it cannot leak into others."""
    with jax.enable_x64(True):
        yield

@functools.cache
def params():
    """Built on first use, inside the module's float64 scope (not at import)."""
    return FilterParams.from_config(dtype=jnp.float64)
_oks = jax.jit(oks_matrix)


def _pose(rng, center, scale=200.0, conf=(0.3, 1.0), K=17):
    xy = center + rng.normal(scale=scale / 3, size=(K, 2))
    return np.concatenate([xy, rng.uniform(*conf, size=(K, 1))], -1)


def _views(rng, n_views=60, P=4, K=17):
    """Random views of P poses: some duplicates (a pose re-detected with small noise), some low-confidence poses,
    some far apart. Keypoints beyond the 17 body ones (K > 17) must be carried along untouched except conf."""
    out = np.zeros((n_views, P, K, 3))
    for v in range(n_views):
        base = [_pose(rng, rng.uniform(200, 1500, 2), K=K) for _ in range(P)]
        for p in range(1, P):
            r = rng.uniform()
            if r < 0.35:  # duplicate of an earlier pose
                q = rng.integers(0, p)
                base[p] = base[q].copy()
                base[p][:, :2] += rng.normal(scale=rng.choice([2.0, 15.0, 40.0]), size=(K, 2))
                base[p][:, 2] = rng.uniform(0.3, 1.0, K)
            elif r < 0.5:  # too few confident keypoints (4..7 above 0.2, around the 6 boundary)
                base[p][:, 2] = 0.1
                base[p][rng.choice(17, rng.integers(4, 8), replace=False), 2] = 0.9
        out[v] = np.stack(base)
    return out


def test_oks_matches_reference():
    rng = np.random.default_rng(0)
    kp = _views(rng, n_views=20)
    for v in range(len(kp)):
        got = np.asarray(_oks(jnp.asarray(kp[v]), jnp.asarray(0.2)))
        for i in range(kp.shape[1]):
            for j in range(kp.shape[1]):
                if i != j:
                    np.testing.assert_allclose(got[i, j], kps_oks(kp[v, i, :17], kp[v, j, :17], 0.2), rtol=1e-12,
                                               atol=1e-30)  # float32 underflow of exp(-d^2) far apart
    # no keypoint valid in both poses -> 0.1 (EgoHumans: "probably different skeletons")
    a, b = _pose(rng, np.array([500.0, 500.0])), _pose(rng, np.array([500.0, 500.0]))
    a[:9, 2], b[9:, 2] = 0.0, 0.0
    assert float(oks_matrix(jnp.asarray(np.stack([a, b])), jnp.asarray(0.2))[0, 1]) == 0.1


def test_filter_matches_reference_both_modes():
    rng = np.random.default_rng(1)
    kp = _views(rng, K=20)[None]  # [1 frame, 60 "cams", 4 people, 20 kpts, 3]
    for keep in ("none", "higher"):
        res = jax.tree.map(np.asarray, filter_keypoints(jnp.asarray(kp), params(), keep=keep))
        n_dup = 0
        for v in range(kp.shape[1]):
            want_kp, want_valid = reference_filter_view(kp[0, v], keep=keep)
            np.testing.assert_array_equal(res.pose_valid[0, v], want_valid)
            np.testing.assert_allclose(res.keypoints[0, v], want_kp, rtol=0, atol=0)
            n_dup += res.duplicate[0, v].sum()
        assert n_dup > 10 and res.too_few.sum() > 5  # the fixture exercises both rules
        assert not (res.too_few & res.pose_valid).any() and not (res.duplicate & res.pose_valid).any()


def test_sequential_duplicate_semantics_and_keep_higher():
    """A ~ B ~ C (chain of near-identical detections): EgoHumans drops A and B, then skips (B, C) because B is
    already gone, so C survives. With keep='higher' the most confident of each hit pair survives."""
    rng = np.random.default_rng(2)
    A = _pose(rng, np.array([800.0, 500.0]), conf=(0.6, 0.7))
    B, C = A.copy(), A.copy()
    B[:, :2] += 1.0
    C[:, :2] += 2.0
    B[:, 2], C[:, 2] = 0.9, 0.8
    far = _pose(rng, np.array([100.0, 100.0]))
    kp = jnp.asarray(np.stack([A, B, C, far])[None, None])
    res = filter_keypoints(kp, params())
    np.testing.assert_array_equal(np.asarray(res.pose_valid[0, 0]), [False, False, True, True])
    np.testing.assert_array_equal(np.asarray(res.duplicate[0, 0]), [True, True, False, False])
    assert float(res.keypoints[0, 0, 0, :, 2].max()) == 0.0 and float(res.keypoints[0, 0, 2, :, 2].min()) > 0
    # keep='higher': (A, B): B more confident -> A dropped; (B, C): B kept -> C dropped.
    res = filter_keypoints(kp, params(), keep="higher")
    np.testing.assert_array_equal(np.asarray(res.pose_valid[0, 0]), [False, True, False, True])


def test_min_keypoints_boundary_and_threshold():
    rng = np.random.default_rng(3)
    poses = []
    for n in (5, 6):  # EgoHumans drops "<= 5 keypoints above 0.2"
        p = _pose(rng, np.array([400.0 + 600 * (n - 5), 400.0]))
        p[:, 2] = 0.2  # exactly at the threshold does not count
        p[:n, 2] = 0.21
        poses.append(p)
    res = filter_with_config(np.stack(poses)[None, None], FilterConfig())
    np.testing.assert_array_equal(np.asarray(res.pose_valid[0, 0]), [False, True])
    np.testing.assert_array_equal(np.asarray(res.too_few[0, 0]), [True, False])


def test_nan_input_and_no_recompile():
    rng = np.random.default_rng(4)
    kp = _views(rng, n_views=6)[None]
    kp[0, 0, 0, 3, :] = np.nan  # a NaN keypoint
    kp[0, 1, 2] = np.nan  # a whole NaN pose
    kp[0, 2, :, :, 2] = 0.0  # a view with nobody
    res = filter_keypoints(jnp.asarray(kp), params())
    for leaf in jax.tree.leaves(res):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert not bool(res.pose_valid[0, 1, 2]) and not bool(res.pose_valid[0, 2].any())
    np.testing.assert_array_equal(np.asarray(res.keypoints[0, 0, 0, 3]), [0.0, 0.0, 0.0])
    before = filter_keypoints._cache_size()
    other = FilterParams.from_config(FilterConfig(keypoint_conf=0.3, min_keypoints=8, oks_threshold=0.5),
                                     dtype=jnp.float64)
    jax.block_until_ready(filter_keypoints(jnp.asarray(np.nan_to_num(kp)), other))
    assert filter_keypoints._cache_size() == before
