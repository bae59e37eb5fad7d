"""The shipped BlazePose ONNX models on a real frame of the Pose2Sim demo (videos_single/cam01.mp4, frame 0).

Reference numbers were recorded by tools/convert_blazepose.py from the original TFLite models (TFLite interpreter,
builtin kernels, no delegate) fed the same input tensors, decoded by the same h4djax.detect code; ONNX agreed to
4e-5 px (detector keypoints) and 7e-5 px (landmarks) in that run (docs/blazepose_parity.md). The tolerances below
leave room for onnxruntime / OpenCV versions, not for a wrong conversion or a changed pre/post-processing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from h4djax.config import DetectConfig
from h4djax.detect import BlazePoseDetector, BlazePoseLandmarker, PoseFrontEnd, load_model_card, roi_from_coco17

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
VIDEO = Path("/work/shared/data/pose2sim_demo/videos_single/cam01.mp4")
if not VIDEO.is_file():  # CI runs on a copy of shared/ beside the clone
    VIDEO = REPO.parent / "shared/data/pose2sim_demo/videos_single/cam01.mp4"

# TFLite reference (tools/convert_blazepose.py --video .../cam01.mp4 --frame 0).
DET_SCORE = 0.957081
DET_KEYPOINTS = [[419.7462, 731.5757], [468.2294, 312.9204], [452.3118, 489.9828], [495.8177, 156.7917]]
DET_ROI = [419.7462, 731.5757, 1053.6332, 1053.6332, 0.115293]
LM_POSE_SCORE = 0.999976
LM_COCO17 = [  # on DET_ROI: x px, y px, visibility x pose presence
    [508.8853, 444.2325, 0.99984],
    [513.5871, 427.1907, 0.99945],
    [500.7394, 424.2112, 0.99978],
    [504.7146, 422.4827, 0.99818],
    [471.1477, 417.1815, 0.99980],
    [515.7655, 512.4338, 0.99993],
    [370.2314, 492.3051, 0.99996],
    [531.6531, 624.1699, 0.87113],
    [294.9413, 605.0249, 0.99911],
    [546.2126, 726.6522, 0.91294],
    [265.7724, 732.0975, 0.99722],
    [458.8998, 739.4332, 0.99991],
    [376.8009, 730.2539, 0.99980],
    [454.0475, 916.5927, 0.98285],
    [366.4276, 905.9637, 0.97789],
    [417.3022, 1084.7823, 0.98345],
    [330.0604, 1012.7382, 0.95649],
]

pytestmark = pytest.mark.skipif(not VIDEO.is_file(), reason="Pose2Sim demo video not available")


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(VIDEO))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def models():
    det = BlazePoseDetector(load_model_card(MODELS / "blazepose_detector.onnx"), threads=2, device="cpu")
    lmk = BlazePoseLandmarker(load_model_card(MODELS / "blazepose_landmark_full.onnx"), threads=2, device="cpu")
    return det, lmk


def test_shipped_models_match_sha256sums():
    sums = {}
    for line in (MODELS / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name] = digest
    for name in ("blazepose_detector.onnx", "blazepose_landmark_full.onnx"):
        assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == sums[name], name


def test_detector_matches_tflite_reference(frame, models):
    det, _ = models
    d = det(frame)
    assert d.num_people == 1  # the one participant of the single-person clip
    np.testing.assert_allclose(d.scores[0], DET_SCORE, atol=1e-4)
    np.testing.assert_allclose(d.keypoints[0], DET_KEYPOINTS, atol=0.05)
    np.testing.assert_allclose(d.rois[0, :4], DET_ROI[:4], atol=0.1)
    np.testing.assert_allclose(d.rois[0, 4], DET_ROI[4], atol=1e-4)


def test_landmarks_match_tflite_reference_and_land_on_the_person(frame, models):
    det, lmk = models
    lm = lmk(frame, np.array([DET_ROI]))
    np.testing.assert_allclose(lm.pose_score[0], LM_POSE_SCORE, atol=1e-4)
    kp = lm.coco17(lmk.card)[0]
    ref = np.array(LM_COCO17)
    np.testing.assert_allclose(kp[:, :2], ref[:, :2], atol=0.05)
    np.testing.assert_allclose(kp[:, 2], ref[:, 2], atol=1e-3)

    # Plausible skeleton, independent of the reference numbers: inside the detector's body ROI, head above the
    # shoulders above the hips above the knees above the ankles (image y grows downwards), confident.
    cx, cy, side = DET_ROI[0], DET_ROI[1], DET_ROI[2]
    assert (np.abs(kp[:, 0] - cx) < side / 2).all() and (np.abs(kp[:, 1] - cy) < side / 2).all()
    y = kp[:, 1]
    head, shoulders, hips, knees, ankles = y[:5].max(), y[5:7].mean(), y[11:13].mean(), y[13:15].mean(), y[15:].mean()
    assert head < shoulders < hips < knees < ankles
    assert ankles - head > 500  # a whole person in a 1920-pixel-high portrait frame
    assert (kp[:, 2] > 0.8).all()
    # The person is on the left half of the frame around x ~ 300..550 (checked visually in the conversion run).
    assert 250 < kp[:, 0].min() and kp[:, 0].max() < 560


def test_front_end_detect_frame_and_rois_from_keypoints(frame):
    front = PoseFrontEnd.from_config(DetectConfig(), root=REPO, device="cpu")
    res = front.run(frame)
    assert res.coco17.shape == (1, 17, 3)
    np.testing.assert_allclose(res.coco17[0, :, :2], np.array(LM_COCO17)[:, :2], atol=0.1)
    np.testing.assert_allclose(res.scores, [DET_SCORE], atol=1e-4)
    # Tracking-style ROI from the keypoints themselves (what the pipeline does with a projected 3D estimate):
    # the landmarks found in it agree with the detector-ROI pass.
    rois = front.rois_from_keypoints(res.coco17)
    np.testing.assert_allclose(rois, roi_from_coco17(res.coco17), atol=1e-9)
    again = front.detect_frame(frame, rois)
    err = np.linalg.norm(again[0, :, :2] - res.coco17[0, :, :2], axis=-1)
    assert np.median(err) < 10.0, err
    assert (again[0, :, 2] > 0.5).all()
