"""Body model forward pass: parity with an independent numpy LBS, fast paths == full path, batching, gradients vs
central finite differences (zero and random poses), no recompilation. float64 inside this module only.

Uses small random SMPL-layout models (h4djax.body.synthetic) so it runs in seconds; the default model gets the
same checks in tests/test_body_default_model.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from h4djax.body import (
    COCO17_NAMES,
    SmplParams,
    coco_fit_points,
    smpl_forward,
    smpl_forward_batch,
    smpl_joints,
    smpl_joints_batch,
    smpl_joints_keypoints,
    smpl_joints_keypoints_batch,
)
from h4djax.body.keypoints import COCO_BODY_TO_SMPL, SMPL_VERTEX_IDS
from h4djax.body.loaders import body_model_from_arrays
from h4djax.body.synthetic import random_smpl_arrays


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------------------------------
# Independent reference: SMPL LBS in plain numpy, written from the paper (sequential 4x4 chain, scipy rotations,
# joints regressed from the full shaped mesh; no shared code with h4djax.body).


def numpy_lbs(arr: dict, go, bp, betas, transl):
    nb = betas.shape[0]
    vt, sd, pd = arr["v_template"], arr["shapedirs"][:, :, :nb], arr["posedirs"]
    Jr, W = arr["J_regressor"], arr["weights"]
    parents = [int(p) if p < 2**31 - 1 else -1 for p in arr["kintree_table"][0]]
    v_shaped = vt + np.einsum("vcb,b->vc", sd, betas)
    Jrest = Jr @ v_shaped
    Rs = Rotation.from_rotvec(np.concatenate([go, bp]).reshape(-1, 3)).as_matrix()
    v_posed = v_shaped + np.einsum("vcp,p->vc", pd, (Rs[1:] - np.eye(3)).reshape(-1))
    G = np.zeros((len(parents), 4, 4))
    for j, p in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = Rs[j]
        local[:3, 3] = Jrest[j] - (Jrest[p] if p >= 0 else 0.0)
        G[j] = local if p < 0 else G[p] @ local
    A = G.copy()
    for j in range(len(parents)):
        unpose = np.eye(4)
        unpose[:3, 3] = -Jrest[j]
        A[j] = G[j] @ unpose
    T = np.einsum("vj,jab->vab", W, A)
    vh = np.concatenate([v_posed, np.ones((len(vt), 1))], axis=1)
    verts = np.einsum("vab,vb->va", T, vh)[:, :3] + transl
    joints = G[:, :3, 3] + transl
    return verts, joints


def numpy_keypoints(arr, verts, joints):
    if "kpt_regressor" in arr:
        return arr["kpt_regressor"] @ verts
    # SMPL fallback: vertex ids for face/feet, joints for COCO body points (keypoints.py docstring)
    from h4djax.body.keypoints import COCO23_NAMES

    return np.stack([verts[SMPL_VERTEX_IDS[n]] if n in SMPL_VERTEX_IDS else joints[COCO_BODY_TO_SMPL[n]]
                     for n in COCO23_NAMES])


def random_params(rng, scale=0.6, batch=(), dtype=np.float64):
    return SmplParams(
        global_orient=jnp.asarray(rng.normal(scale=scale, size=(*batch, 3)), dtype),
        body_pose=jnp.asarray(rng.normal(scale=scale, size=(*batch, 69)), dtype),
        betas=jnp.asarray(rng.normal(scale=1.0, size=(*batch, 10)), dtype),
        transl=jnp.asarray(rng.normal(scale=0.5, size=(*batch, 3)), dtype),
    )


@pytest.fixture(scope="module")
def arrays():
    return random_smpl_arrays(num_verts=300, seed=0)


@pytest.fixture(scope="module")
def model64(arrays):
    return body_model_from_arrays(arrays, dtype=np.float64, name="random300")


_fwd = jax.jit(smpl_forward)
_joints = jax.jit(smpl_joints)
_sparse = jax.jit(smpl_joints_keypoints)


def test_numpy_lbs_parity_float64(arrays, model64):
    rng = np.random.default_rng(1)
    assert model64.pose_blend and model64.num_kpts == 23
    for trial in range(6):
        p = random_params(rng, scale=0.0 if trial == 0 else 0.8)
        out = _fwd(model64, p)
        v_ref, j_ref = numpy_lbs(arrays, *(np.asarray(x) for x in (p.global_orient, p.body_pose, p.betas, p.transl)))
        k_ref = numpy_keypoints(arrays, v_ref, j_ref)
        np.testing.assert_allclose(np.asarray(out.vertices), v_ref, atol=1e-10)
        np.testing.assert_allclose(np.asarray(out.joints), j_ref, atol=1e-10)
        np.testing.assert_allclose(np.asarray(out.keypoints), k_ref, atol=1e-10)


def test_float32_model_close_to_float64_reference(arrays):
    model32 = body_model_from_arrays(arrays, dtype=np.float32)
    assert model32.v_template.dtype == jnp.float32
    rng = np.random.default_rng(2)
    p = random_params(rng, dtype=np.float32)
    out = jax.jit(smpl_forward)(model32, p)
    assert out.vertices.dtype == jnp.float32
    v_ref, j_ref = numpy_lbs(arrays, *(np.asarray(x, np.float64) for x in (p.global_orient, p.body_pose, p.betas,
                                                                             p.transl)))
    np.testing.assert_allclose(np.asarray(out.vertices), v_ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.joints), j_ref, atol=1e-5)


def test_model_without_pose_correctives_skips_them():
    arr = random_smpl_arrays(num_verts=200, seed=3, pose_blend=False)
    m = body_model_from_arrays(arr, dtype=np.float64)
    assert not m.pose_blend
    p = random_params(np.random.default_rng(4))
    v_ref, _ = numpy_lbs(arr, *(np.asarray(x) for x in (p.global_orient, p.body_pose, p.betas, p.transl)))
    np.testing.assert_allclose(np.asarray(_fwd(m, p).vertices), v_ref, atol=1e-10)


def test_fast_paths_equal_full_path(model64):
    rng = np.random.default_rng(5)
    p = random_params(rng)
    full = _fwd(model64, p)
    np.testing.assert_allclose(np.asarray(_joints(model64, p)), np.asarray(full.joints), atol=1e-12)
    sp = _sparse(model64, p)
    assert sp.vertices is None
    np.testing.assert_allclose(np.asarray(sp.joints), np.asarray(full.joints), atol=1e-12)
    np.testing.assert_allclose(np.asarray(sp.keypoints), np.asarray(full.keypoints), atol=1e-12)
    # ... and equal to the regressor applied to the skinned mesh, literally
    np.testing.assert_allclose(np.asarray(full.keypoints),
                               np.asarray(model64.kpt_regressor) @ np.asarray(full.vertices), atol=1e-12)


def test_smpl_topology_fallback_keypoints():
    """Official SMPL files carry no COCO regressor: face/feet from the standard vertex ids, body from joints."""
    arr = random_smpl_arrays(num_verts=6890, seed=6, keypoints=False)
    m = body_model_from_arrays(arr, dtype=np.float64)
    assert m.num_kpts == 23 and m.kpt_names[:17] == COCO17_NAMES
    rng = np.random.default_rng(7)
    p = random_params(rng)
    out = _fwd(m, p)
    v_ref, j_ref = numpy_lbs(arr, *(np.asarray(x) for x in (p.global_orient, p.body_pose, p.betas, p.transl)))
    np.testing.assert_allclose(np.asarray(out.keypoints), numpy_keypoints(arr, v_ref, j_ref), atol=1e-10)
    np.testing.assert_allclose(np.asarray(_sparse(m, p).keypoints), np.asarray(out.keypoints), atol=1e-12)
    coco = np.asarray(coco_fit_points(m, out))
    np.testing.assert_allclose(coco[0], v_ref[332], atol=1e-10)  # nose vertex
    np.testing.assert_allclose(coco[5], j_ref[16], atol=1e-10)  # left shoulder joint


def test_coco_fit_correspondence(arrays, model64):
    """PIPELINE.md 1.5: face points from mesh vertices (model keypoints), body points from SMPL joints."""
    out = _fwd(model64, random_params(np.random.default_rng(8)))
    coco = np.asarray(coco_fit_points(model64, out))
    kp, jt = np.asarray(out.keypoints), np.asarray(out.joints)
    assert coco.shape == (17, 3)
    np.testing.assert_array_equal(coco[:5], kp[:5])
    for k, name in enumerate(COCO17_NAMES[5:], start=5):
        np.testing.assert_array_equal(coco[k], jt[COCO_BODY_TO_SMPL[name]])
    assert COCO_BODY_TO_SMPL["left_hip"] == 1 and COCO_BODY_TO_SMPL["right_ankle"] == 8


def test_batched_versions_match_kernel(model64):
    rng = np.random.default_rng(9)
    P, F = 2, 3
    p = random_params(rng, batch=(P, F))
    betas_pp = jnp.asarray(rng.normal(size=(P, 10)))  # one shape per person, broadcast over frames
    p = p.replace(betas=betas_pp)
    out, jb, sb = jax.jit(lambda m, q: (smpl_forward_batch(m, q), smpl_joints_batch(m, q),
                                        smpl_joints_keypoints_batch(m, q)))(model64, p)
    assert out.vertices.shape == (P, F, model64.num_verts, 3) and jb.shape == (P, F, 24, 3)
    assert sb.keypoints.shape == (P, F, 23, 3)
    for i in range(P):
        for t in range(F):
            pi = SmplParams(global_orient=p.global_orient[i, t], body_pose=p.body_pose[i, t], betas=betas_pp[i],
                            transl=p.transl[i, t])
            ref = _fwd(model64, pi)
            np.testing.assert_allclose(np.asarray(out.vertices[i, t]), np.asarray(ref.vertices), atol=1e-12)
            np.testing.assert_allclose(np.asarray(jb[i, t]), np.asarray(ref.joints), atol=1e-12)
            np.testing.assert_allclose(np.asarray(sb.keypoints[i, t]), np.asarray(ref.keypoints), atol=1e-12)
    assert coco_fit_points(model64, out).shape == (P, F, 17, 3)
    with pytest.raises(ValueError, match="betas batch shape"):
        smpl_joints_batch(model64, p.replace(betas=jnp.zeros((F, 10))))


# ---------------------------------------------------------------------------------------------------------------------
# Gradients vs central finite differences (float64)


def _flat(p: SmplParams) -> np.ndarray:
    return np.concatenate([np.asarray(x).reshape(-1) for x in (p.global_orient, p.body_pose, p.betas, p.transl)])


def _unflat(x) -> SmplParams:
    return SmplParams(global_orient=x[:3], body_pose=x[3:72], betas=x[72:82], transl=x[82:85])


def _full_loss(m, w, q):
    o = smpl_forward(m, q)
    return jnp.sum(w["v"] * o.vertices) + jnp.sum(w["j"] * o.joints) + jnp.sum(w["k"] * o.keypoints)


def _joints_loss(m, w, q):
    # quadratic, so the gradient is informative at zero pose in every direction
    return jnp.sum((smpl_joints(m, q) - w["target"]) ** 2)


def _sparse_loss(m, w, q):
    o = smpl_joints_keypoints(m, q)
    return jnp.sum(w["k"] * o.keypoints) + jnp.sum(w["j"] * o.joints)


_VALUE_AND_GRAD = {
    loss.__name__: jax.jit(jax.value_and_grad(lambda m, w, x, loss=loss: loss(m, w, _unflat(x)), argnums=2))
    for loss in (_full_loss, _joints_loss, _sparse_loss)
}
# forward mode on the cheapest loss only (every extra transform is another compile)
_JACFWD_JOINTS = jax.jit(jax.jacfwd(lambda m, w, x: _joints_loss(m, w, _unflat(x)), argnums=2))


@pytest.mark.parametrize("pose", ["zero", "random"])
@pytest.mark.parametrize("loss", sorted(_VALUE_AND_GRAD))
def test_gradients_match_finite_differences(model64, pose, loss):
    rng = np.random.default_rng(10)
    p = random_params(rng, scale=0.0 if pose == "zero" else 0.7)
    if pose == "zero":
        p = p.replace(betas=jnp.zeros(10), transl=jnp.zeros(3))
    w = {"v": jnp.asarray(rng.normal(size=(model64.num_verts, 3))), "j": jnp.asarray(rng.normal(size=(24, 3))),
         "k": jnp.asarray(rng.normal(size=(23, 3))), "target": jnp.asarray(rng.normal(size=(24, 3)))}
    vg = _VALUE_AND_GRAD[loss]
    x0 = np.asarray(_flat(p))
    g = np.asarray(vg(model64, w, jnp.asarray(x0))[1])
    assert np.all(np.isfinite(g))
    h = 1e-6
    fd = np.empty_like(g)
    for i in range(x0.size):  # central differences, one coordinate at a time (same compiled function)
        e = np.zeros_like(x0)
        e[i] = h
        fd[i] = (float(vg(model64, w, jnp.asarray(x0 + e))[0]) - float(vg(model64, w, jnp.asarray(x0 - e))[0])) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)  # central-difference roundoff ~ eps*|f|/h
    if loss == "_joints_loss":  # forward mode == reverse mode
        np.testing.assert_allclose(np.asarray(_JACFWD_JOINTS(model64, w, jnp.asarray(x0))), g, rtol=1e-10,
                                   atol=1e-12)


def test_no_recompile_for_new_values(model64):
    traces = []

    def f(m, q):
        traces.append(1)
        return smpl_joints_keypoints(m, q).keypoints

    jf = jax.jit(f)
    rng = np.random.default_rng(11)
    for _ in range(3):
        jf(model64, random_params(rng)).block_until_ready()
    assert len(traces) == 1
