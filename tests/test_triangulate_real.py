"""Real data: the Pose2Sim demo (4 calibrated cameras, OpenPose BODY_25B detections of one person balancing).

No 3D ground truth exists, so the checks are reprojection errors (the README: confidence-weighted DLT gives a
median of about 13 px), leave-one-camera-out prediction, and anatomical consistency of the COCO-17 order of
BODY_25B's first 17 keypoints (left/right limbs of equal length, plausible widths)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.config import FilterConfig, TriangulationConfig
from h4djax.geometry import project, to_jax
from h4djax.triangulate import filter_with_config, triangulate_with_config

DATA = Path("/work/shared/data/pose2sim_demo")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="Pose2Sim demo data not available")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.fixture(scope="module")
def capture():
    from triangulate import _largest_person

    from h4djax.io.openpose import read_openpose
    from h4djax.io.pose2sim import read_pose2sim_toml

    cams = read_pose2sim_toml(DATA / "calibration/Calib_qualisys.toml")
    det = read_openpose(DATA / "openpose_2d/balancing_single")
    kp = _largest_person(det.coco17()).astype(np.float32)  # the participant: largest keypoint box per view
    kp = np.asarray(filter_with_config(kp, FilterConfig()).keypoints)
    return to_jax(cams, jnp.float32), kp


def _errors(cams, xyz, kp):
    uv = np.moveaxis(np.asarray(project(cams, jnp.asarray(xyz))[0]), 0, 1)
    return np.linalg.norm(uv - kp[..., :2], axis=-1)


def test_reprojection_and_body_proportions(capture):
    cams, kp = capture
    res = jax.tree.map(np.asarray, triangulate_with_config(cams, jnp.asarray(kp), TriangulationConfig()))
    for leaf in jax.tree.leaves(res):
        assert np.all(np.isfinite(leaf))
    assert res.valid.mean() > 0.8
    err = _errors(cams, res.xyz, kp)
    seen = (kp[..., 2] > 0.5) & res.valid[:, None]
    per_cam = [np.median(err[:, c][seen[:, c]]) for c in range(4)]
    # Robust triangulation must beat the README's confidence-weighted DLT (13 px median; 17 / 9 / 20 / 10).
    assert np.median(err[seen]) < 13.0, np.median(err[seen])
    assert max(per_cam) < 22.0, per_cam
    # BODY_25B[:17] is COCO-17: paired limbs have equal lengths, widths are human.
    xyz, v = res.xyz[:, 0], res.valid[:, 0]

    def seg(a, b):
        m = v[:, a] & v[:, b]
        return np.median(np.linalg.norm(xyz[m, a] - xyz[m, b], axis=-1))

    for (a, b), (c, d) in [((5, 7), (6, 8)), ((7, 9), (8, 10)), ((11, 13), (12, 14)), ((13, 15), (14, 16))]:
        assert abs(seg(a, b) - seg(c, d)) < 0.15 * seg(a, b)
    assert 0.25 < seg(5, 6) < 0.5 and 0.15 < seg(11, 12) < 0.35 and 0.04 < seg(1, 2) < 0.09
    assert 0.3 < seg(11, 13) < 0.55 and 0.3 < seg(13, 15) < 0.55
    # ... and "left" is the subject's left (a consistently mirrored order would pass the checks above)
    from triangulate import left_is_left

    assert left_is_left(xyz, v) > 0.75  # 0.88 measured: 5 consecutive frames flip (detector L/R flips or the
    # face-direction estimate), a mirrored order would give ~0.12


def test_leave_one_camera_out(capture):
    cams, kp = capture
    medians = []
    for c in range(4):
        keep = [i for i in range(4) if i != c]
        # Same camera names for every subset: names are static in the Cameras pytree (one compilation for all 4).
        sub = cams.select(keep).replace(names=("a", "b", "c"))
        r = jax.tree.map(np.asarray, triangulate_with_config(sub, jnp.asarray(kp[:, keep]), TriangulationConfig()))
        e = _errors(cams.select([c]), r.xyz, kp[:, [c]])[:, 0]
        m = r.valid & (kp[:, c, ..., 2] > 0.5)
        assert m.sum() > 500
        medians.append(np.median(e[m]))
    # Predicting a held-out real camera from 3 others: tens of pixels (1080x1920 images, f ~ 1680 px).
    assert max(medians) < 60.0 and np.median(medians) < 35.0, medians
