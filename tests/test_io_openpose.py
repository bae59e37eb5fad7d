"""OpenPose JSON reader and the BODY_25B -> COCO-17 order, checked on the real Pose2Sim detections."""

import json
from pathlib import Path

import numpy as np
import pytest

from h4djax.errors import CaptureError
from h4djax.geometry.cameras_np import project_np, undistort_points_np
from h4djax.io import body25b_to_coco17, read_cameras, read_openpose

DATA = Path("/work/shared/data/pose2sim_demo")
needs_data = pytest.mark.skipif(not DATA.exists(), reason="shared Pose2Sim demo data not present")


def _write(folder: Path, name: str, people: list[np.ndarray]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"version": 1.3, "people": [
        {"person_id": [-1], "pose_keypoints_2d": p.reshape(-1).tolist()} for p in people]}))


def test_reader_orders_people_and_pads(tmp_path):
    rng = np.random.default_rng(0)
    weak, strong = rng.uniform(0, 100, (25, 3)), rng.uniform(0, 100, (25, 3))
    weak[:, 2], strong[:, 2] = 0.2, 0.9
    _write(tmp_path / "cam01_json", "cam01.0000.json", [weak, strong])
    _write(tmp_path / "cam01_json", "cam01.0002.json", [])
    _write(tmp_path / "cam02_json", "cam02_000000000001_keypoints.json", [weak])
    det = read_openpose(tmp_path)
    assert det.camera_names == ("cam01", "cam02")
    np.testing.assert_array_equal(det.frames, [0, 1, 2])
    assert det.keypoints.shape == (3, 2, 2, 25, 3) and det.keypoints.dtype == np.float32
    np.testing.assert_allclose(det.keypoints[0, 0, 0], strong, rtol=1e-6)  # most confident first
    np.testing.assert_allclose(det.keypoints[0, 0, 1], weak, rtol=1e-6)
    np.testing.assert_allclose(det.keypoints[1, 1, 0], weak, rtol=1e-6)
    assert not det.keypoints[1, 0].any() and not det.keypoints[2].any() and not det.keypoints[0, 1].any()
    assert det.coco17().shape == (3, 2, 2, 17, 3)
    assert read_openpose(tmp_path, max_people=1).keypoints.shape[2] == 1


def test_reader_errors(tmp_path):
    with pytest.raises(CaptureError, match="no sub-folders"):
        read_openpose(tmp_path)
    _write(tmp_path / "cam01_json", "cam01.0000.json", [np.zeros((24, 3))])
    with pytest.raises(CaptureError, match="cam01.0000.json: people\\[0\\].pose_keypoints_2d has 72 values"):
        read_openpose(tmp_path)
    (tmp_path / "cam01_json" / "cam01.0000.json").write_text("{not json")
    with pytest.raises(CaptureError, match="not valid JSON"):
        read_openpose(tmp_path)
    with pytest.raises(ValueError, match="25"):
        body25b_to_coco17(np.zeros((3, 17, 3)))


def _triangulate(cams, kp):
    """Plain confidence-weighted DLT (numpy) of one person: kp [frames, cams, kpts, 3] -> [frames, kpts, 3]."""
    x = kp[..., :2].transpose(1, 0, 2, 3)
    w = np.where(kp[..., 2] > 0.3, kp[..., 2], 0.0).transpose(1, 0, 2)
    xy = undistort_points_np(cams, x)
    P = np.concatenate([np.asarray(cams.R), np.asarray(cams.t)[:, :, None]], 2)[:, None, None]
    rows = np.stack([xy[..., 0, None] * P[..., 2, :] - P[..., 0, :], xy[..., 1, None] * P[..., 2, :] - P[..., 1, :]],
                    -2) * w[..., None, None]
    C, F, K = w.shape
    A = rows.transpose(1, 2, 0, 3, 4).reshape(F, K, 2 * C, 4)
    X = np.linalg.svd(A)[2][..., -1, :]
    return X[..., :3] / X[..., 3:], (w > 0).sum(0)


@needs_data
def test_body25b_order_on_real_detections():
    """The first 17 BODY_25B keypoints are COCO-17: checked in 3D on the real balancing capture."""
    cams = read_cameras(DATA / "calibration" / "Calib_qualisys.toml")
    det = read_openpose(DATA / "openpose_2d" / "balancing_single")
    assert det.keypoints.shape[:2] == (100, 4) and det.camera_names == ("cam01", "cam02", "cam03", "cam04")
    kp = det.keypoints[:, :, 0].astype(np.float64)  # the participant is the most confident person in every view
    X, views = _triangulate(cams, kp)
    # Reprojection sanity: the README's known ~13 px median for this calibration and these detections.
    uv, _ = project_np(cams, X)
    err = np.linalg.norm(uv - kp[..., :2].transpose(1, 0, 2, 3), axis=-1)
    ok = (kp[..., 2].transpose(1, 0, 2) > 0.3) & (views >= 2)[None]
    assert 8 < np.median(err[ok]) < 18
    good = views >= 2
    X = np.where(good[..., None], X, np.nan)

    def d(a, b):
        return np.nanmedian(np.linalg.norm(X[:, a] - X[:, b], axis=-1))

    coco = body25b_to_coco17(np.arange(25)[:, None].repeat(3, 1))[:, 0]
    nose, l_eye, r_eye, l_sh, r_sh, l_el, r_el, l_hip, r_hip, l_ank = coco[[0, 1, 2, 5, 6, 7, 8, 11, 12, 15]]
    # 1, 2 are eyes (a few cm from the nose), not BODY_25's neck / right shoulder (tens of cm).
    assert d(l_eye, nose) < 0.07 and d(r_eye, nose) < 0.07 and d(l_sh, r_sh) > 0.25
    # Left chain is left: upper arms connect shoulder i to elbow i, not across the body.
    assert d(l_sh, l_el) < 0.4 and d(r_sh, r_el) < 0.4 and d(l_sh, r_el) > 0.45 and d(r_sh, l_el) > 0.45
    # Handedness: (left - right shoulder) x (up) points forward (towards the nose) for a right-handed world.
    up = (X[:, l_sh] + X[:, r_sh] - X[:, l_hip] - X[:, r_hip]) / 2
    fwd = X[:, nose] - (X[:, l_sh] + X[:, r_sh]) / 2
    side = np.einsum("fi,fi->f", np.cross(X[:, l_sh] - X[:, r_sh], up), fwd)
    assert (side[np.isfinite(side)] > 0).mean() > 0.85 and np.isfinite(side).sum() > 50
    # World z is up in this lab: the nose is ~1.3 m above the ankle.
    assert np.nanmedian(X[:, nose, 2] - X[:, l_ank, 2]) > 1.0
