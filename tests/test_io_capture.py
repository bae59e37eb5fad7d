"""Capture directory (FORMATS.md): lossless round trip and clear errors on malformed input."""

import numpy as np
import pytest

from h4djax.errors import CalibrationError, CaptureError
from h4djax.geometry import Cameras
from h4djax.io import Capture, GroundTruth, read_capture, write_capture


def rig(n=3) -> Cameras:
    rng = np.random.default_rng(0)
    K = np.tile(np.array([[1000.0, 0, 960], [0, 1001.5, 540], [0, 0, 1]]), (n, 1, 1))
    dist = np.zeros((n, 8))
    dist[:, :5] = rng.normal(scale=0.01, size=(n, 5))
    R = np.tile(np.eye(3), (n, 1, 1))
    t = rng.normal(size=(n, 3))
    return Cameras(K=K, dist=dist, R=R, t=t, size=np.tile([1920, 1080], (n, 1)), fisheye=np.zeros(n, bool),
                   names=tuple(f"cam{i}" for i in range(n)))


def capture(F=4, P=2, K=17, with_smpl=True) -> Capture:
    rng = np.random.default_rng(1)
    cams = rig()
    kp = np.concatenate([rng.uniform(0, 1000, (F, 3, P, K, 2)), rng.uniform(0, 1, (F, 3, P, K, 1))], -1)
    j3 = rng.normal(size=(F, P, K, 3)).astype(np.float32)
    j3[0, 0, 0] = np.nan  # unknown
    gt = GroundTruth(joints3d=j3)
    if with_smpl:
        gt = GroundTruth(joints3d=j3, global_orient=rng.normal(size=(F, P, 3)), body_pose=rng.normal(size=(F, P, 69)),
                         betas=rng.normal(size=(P, 10)), transl=rng.normal(size=(F, P, 3)))
    return Capture(cameras=cams, keypoints=kp, joint_set="coco17", associated=True, fps=59.94, gt=gt)


def test_round_trip(tmp_path):
    cap = capture()
    write_capture(tmp_path, cap)
    assert {p.name for p in tmp_path.iterdir()} == {"cameras.toml", "keypoints2d.npz", "gt.npz"}
    back = read_capture(tmp_path)
    assert back.keypoints.dtype == np.float32 and back.keypoints.shape == (4, 3, 2, 17, 3)
    np.testing.assert_array_equal(back.keypoints, cap.keypoints)
    assert (back.joint_set, back.associated, back.fps) == ("coco17", True, 59.94)
    for f in ("K", "dist", "R", "t", "size"):
        np.testing.assert_array_equal(getattr(back.cameras, f), getattr(cap.cameras, f))
    assert back.cameras.names == cap.cameras.names
    np.testing.assert_array_equal(back.gt.joints3d, cap.gt.joints3d)  # NaN positions preserved
    for f in ("global_orient", "body_pose", "betas", "transl"):
        np.testing.assert_allclose(getattr(back.gt, f), np.asarray(getattr(cap.gt, f), np.float32))
    assert back.gt.has_smpl and back.num_frames == 4 and back.num_people == 2


def test_round_trip_without_gt_and_unassociated(tmp_path):
    cap = capture()
    cap = Capture(cameras=cap.cameras, keypoints=cap.keypoints, joint_set="coco17", associated=False, fps=30.0)
    write_capture(tmp_path, cap)
    back = read_capture(tmp_path)
    assert back.gt is None and back.associated is False


def test_nan_keypoints_become_missing_with_warning(tmp_path):
    cap = capture()
    write_capture(tmp_path, cap)
    kp = cap.keypoints.copy()
    kp[1, 2, 0, 5, 0] = np.nan
    kp[2, 0, 1, 3, 2] = np.nan
    np.savez(tmp_path / "keypoints2d.npz", keypoints=kp, joint_set="coco17", associated=True, fps=30.0)
    with pytest.warns(UserWarning, match="2 keypoints contain NaN"):
        back = read_capture(tmp_path)
    np.testing.assert_array_equal(back.keypoints[1, 2, 0, 5], 0)
    np.testing.assert_array_equal(back.keypoints[2, 0, 1, 3], 0)
    assert np.isfinite(back.keypoints).all()


@pytest.mark.parametrize(
    "arrays,message",
    [
        (dict(keypoints=np.zeros((2, 3, 1, 17, 2)), joint_set="coco17", associated=True, fps=30.0), "shape"),
        (dict(keypoints=np.zeros((2, 4, 1, 17, 3)), joint_set="coco17", associated=True, fps=30.0),
         "4 cameras but cameras.toml has 3"),
        (dict(keypoints=np.zeros((2, 3, 1, 25, 3)), joint_set="coco17", associated=True, fps=30.0),
         "25 keypoints but joint_set 'coco17' has 17"),
        (dict(keypoints=np.zeros((2, 3, 1, 17, 3)), associated=True, fps=30.0), "missing field 'joint_set'"),
        (dict(joint_set="coco17", associated=True, fps=30.0), "missing field 'keypoints'"),
        (dict(keypoints=np.zeros((2, 3, 1, 17, 3)), joint_set="coco17", associated=True, fps=-1.0), "'fps'"),
        (dict(keypoints=np.zeros((2, 3, 1, 17, 3)), joint_set="coco17", associated="yes", fps=30.0), "'associated'"),
        (dict(keypoints=np.zeros((2, 3, 1, 17, 3), int), joint_set="coco17", associated=True, fps=30.0),
         "floating point"),
        (dict(keypoints=-np.ones((2, 3, 1, 17, 3)), joint_set="coco17", associated=True, fps=30.0),
         "negative confidences"),
    ],
)
def test_bad_keypoints(tmp_path, arrays, message):
    write_capture(tmp_path, capture(with_smpl=False).__class__(cameras=rig(), keypoints=None))
    np.savez(tmp_path / "keypoints2d.npz", **arrays)
    with pytest.raises(CaptureError, match=message) as e:
        read_capture(tmp_path)
    assert "keypoints2d.npz" in str(e.value)


def test_corrupt_files_and_missing_parts(tmp_path):
    cap = capture()
    write_capture(tmp_path, cap)
    (tmp_path / "keypoints2d.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CaptureError, match="keypoints2d.npz: not a readable .npz"):
        read_capture(tmp_path)
    (tmp_path / "keypoints2d.npz").unlink()
    with pytest.raises(CaptureError, match="missing keypoints2d.npz"):
        read_capture(tmp_path)
    with pytest.raises(CaptureError, match="missing keypoints2d.npz"):
        read_capture(tmp_path, require_keypoints=False)  # and no videos either
    for name in cap.cameras.names:
        (tmp_path / "images" / name).mkdir(parents=True)
    video_only = read_capture(tmp_path, require_keypoints=False)
    assert video_only.keypoints is None and set(video_only.media) == set(cap.cameras.names)
    (tmp_path / "cameras.toml").write_text((tmp_path / "cameras.toml").read_text().replace("model = ", "modl = ", 1))
    with pytest.raises(CalibrationError, match="cameras.toml"):
        read_capture(tmp_path)
    (tmp_path / "cameras.toml").unlink()
    with pytest.raises(CaptureError, match="missing cameras.toml"):
        read_capture(tmp_path)
    with pytest.raises(CaptureError, match="no such capture directory"):
        read_capture(tmp_path / "nope")


def test_bad_gt(tmp_path):
    cap = capture()
    write_capture(tmp_path, cap)
    g = dict(np.load(tmp_path / "gt.npz"))
    np.savez(tmp_path / "gt.npz", **{k: v for k, v in g.items() if k != "betas"})
    with pytest.raises(CaptureError, match="gt.npz: SMPL parameters need all .* missing field 'betas'"):
        read_capture(tmp_path)
    np.savez(tmp_path / "gt.npz", **{**g, "body_pose": g["body_pose"][..., :63]})
    with pytest.raises(CaptureError, match="'body_pose' must have shape"):
        read_capture(tmp_path)
    np.savez(tmp_path / "gt.npz", joints3d=g["joints3d"][:3])
    with pytest.raises(CaptureError, match="'joints3d' has 3 frames"):
        read_capture(tmp_path)
    np.savez(tmp_path / "gt.npz", joints3d=g["joints3d"], extra=np.zeros(3))
    with pytest.raises(CaptureError, match="unknown field 'extra'"):
        read_capture(tmp_path)


def test_capture_constructor_validates():
    cap = capture()
    with pytest.raises(CaptureError, match="cameras"):
        Capture(cameras=rig(2), keypoints=cap.keypoints)
