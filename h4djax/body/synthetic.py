"""Small random but structurally valid SMPL-layout models, for tests and examples that must not depend on a real
body-model file (and for exercising the loaders: `save_npz`, `save_smpl_like_pkl` in the tests).

The arrays obey every invariant the loaders check and the forward pass relies on: SMPL kinematic tree, skinning
weights and joint-regressor rows summing to 1 with a few nonzero entries (like SMPL's), vertices scattered around a
rough human rest skeleton so poses move them sensibly, a sparse keypoint regressor (COCO-17 + 6 foot points).
They are NOT a human body: use `load_body_model()` for that.
"""

from __future__ import annotations

import numpy as np

from h4djax.body.keypoints import COCO23_NAMES
from h4djax.body.model import SMPL_JOINT_NAMES, SMPL_PARENTS

__all__ = ["random_smpl_arrays", "SMPL_REST_JOINTS_APPROX"]

# Rough SMPL neutral T-pose rest joints (metres, y up, x = subject's left), only to give random models a plausible
# spatial layout. Not taken from any model file.
SMPL_REST_JOINTS_APPROX = np.array([
    [0.00, -0.22, 0.02], [0.06, -0.31, 0.01], [-0.06, -0.31, 0.01], [0.00, -0.11, -0.01], [0.11, -0.69, 0.01],
    [-0.11, -0.69, 0.00], [0.00, 0.03, 0.02], [0.07, -1.09, -0.03], [-0.07, -1.09, -0.03], [0.00, 0.08, 0.03],
    [0.12, -1.15, 0.09], [-0.12, -1.15, 0.09], [0.00, 0.29, -0.01], [0.08, 0.20, 0.00], [-0.08, 0.20, 0.00],
    [0.01, 0.36, 0.04], [0.19, 0.23, -0.01], [-0.19, 0.23, -0.01], [0.45, 0.21, -0.03], [-0.45, 0.21, -0.03],
    [0.71, 0.22, -0.03], [-0.71, 0.22, -0.03], [0.79, 0.21, -0.04], [-0.79, 0.21, -0.04],
])


def random_smpl_arrays(
    num_verts: int = 400,
    *,
    num_betas: int = 10,
    seed: int = 0,
    pose_blend: bool = True,
    keypoints: bool = True,
    verts_per_kpt: int = 6,
) -> dict[str, np.ndarray]:
    """Arrays in the `.npz` layout (v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f
    [+ kpt_regressor, kpt_names, joint_names]), float64. `num_verts = 6890` gives the SMPL vertex count (the
    loaders then use the SMPL vertex-id keypoint fallback if `keypoints=False`)."""
    rng = np.random.default_rng(seed)
    J = len(SMPL_PARENTS)
    # Each vertex belongs mainly to one joint; place it near that joint.
    owner = rng.integers(0, J, size=num_verts)
    v_template = SMPL_REST_JOINTS_APPROX[owner] + rng.normal(scale=0.05, size=(num_verts, 3))
    shapedirs = rng.normal(scale=0.01, size=(num_verts, 3, num_betas))
    posedirs = rng.normal(scale=0.002, size=(num_verts, 3, 9 * (J - 1))) if pose_blend else np.zeros(
        (num_verts, 3, 9 * (J - 1)))
    # Skinning weights: the owner joint, its parent and up to 2 random joints (SMPL has <= 4 nonzero per vertex).
    weights = np.zeros((num_verts, J))
    for v in range(num_verts):
        o = owner[v]
        weights[v, o] = 1.0 + rng.random()
        if SMPL_PARENTS[o] >= 0:
            weights[v, SMPL_PARENTS[o]] = rng.random()
        weights[v, rng.integers(0, J, size=2)] += 0.3 * rng.random(2)
    weights /= weights.sum(1, keepdims=True)
    # Joint regressor: each joint a convex combination of ~8 of its own vertices (or random ones if it owns none).
    J_regressor = np.zeros((J, num_verts))
    for j in range(J):
        own = np.flatnonzero(owner == j)
        pool = own if own.size else np.arange(num_verts)
        idx = rng.choice(pool, size=min(8, pool.size), replace=False)
        J_regressor[j, idx] = rng.random(idx.size) + 0.1
    J_regressor /= J_regressor.sum(1, keepdims=True)
    faces = rng.integers(0, num_verts, size=(2 * num_verts, 3))
    kintree = np.array([[np.iinfo(np.uint32).max if p < 0 else p for p in SMPL_PARENTS], np.arange(J)],
                       dtype=np.int64)
    out = dict(v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, J_regressor=J_regressor,
               weights=weights, kintree_table=kintree, f=faces, joint_names=np.array(SMPL_JOINT_NAMES))
    if keypoints:
        K = len(COCO23_NAMES)
        reg = np.zeros((K, num_verts))
        for k in range(K):
            idx = rng.choice(num_verts, size=verts_per_kpt, replace=False)
            reg[k, idx] = rng.random(verts_per_kpt) + 0.1
        reg /= reg.sum(1, keepdims=True)
        out["kpt_regressor"] = reg
        out["kpt_names"] = np.array(COCO23_NAMES)
    return out
