"""h4djax.detect with tiny ONNX graphs of known output (onnx.helper): preprocessing and affine crops, heatmap /
SimCC / BlazePose / YOLOX decoding, NMS, model cards, the front end, and the multi-camera readers."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from h4djax.detect import (
    BlazePoseDetector, BlazePoseLandmarker, BoxDetector, ModelCardError, MultiCameraReader, PoseFrontEnd,
    TopDownModel, VideoError, box_to_roi, crop_to_image_affine, decode_heatmaps, decode_simcc, letterbox,
    load_model_card, make_card, nms, parse_overrides, roi_from_coco17, ssd_anchors, warp_crop, weighted_nms,
)
from h4djax.detect.blazepose import refine_from_heatmap, roi_from_alignment_points
from h4djax.detect.crop import apply_affine
from h4djax.detect.runtime import OnnxModel


# ----------------------------------------------------------------------------------------------------------------
# tiny ONNX graphs
# ----------------------------------------------------------------------------------------------------------------

def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def identity_model(path: Path, shape: list[int]) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    return _save(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y]), path)


def constant_model(path: Path, in_shape: list[int], outputs: dict[str, np.ndarray]) -> Path:
    """A graph whose outputs are fixed tensors; the input is consumed (x 0) so it stays a real graph input and the
    batch size of the outputs follows the input's."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, val in outputs.items():
        val = np.asarray(val, np.float32)
        inits.append(numpy_helper.from_array(val, f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(val.shape)))
    return _save(helper.make_graph(nodes, "constant", [x], outs, initializer=inits), path)


def gaussian(h: int, w: int, cx: float, cy: float, sigma: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------------------------------------------
# crops and preprocessing
# ----------------------------------------------------------------------------------------------------------------

def test_identity_graph_preprocessing_is_exact(tmp_path, rng):
    """Axis-aligned ROI at scale 1 on integer pixels: the model input is exactly the image slice, colour-swapped,
    normalized and transposed as the card says."""
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    w, h = 48, 64
    path = identity_model(tmp_path / "id.onnx", [1, 3, h, w])
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
    card = make_card({"kind": "topdown_heatmap", "input_size": [w, h], "layout": "nchw", "color": "bgr",
                      "mean": list(mean), "std": list(std)})
    model = OnnxModel(dataclasses.replace(card, path=str(path)))
    cx, cy = 70.0, 50.0  # crop point p -> image C + (p - out/2): pixel (0, 0) of the crop is image (46, 18)
    crop, a = warp_crop(img, np.array([cx, cy, w, h, 0.0]), w, h)
    x0, y0 = int(cx - w / 2), int(cy - h / 2)
    np.testing.assert_array_equal(crop, img[y0:y0 + h, x0:x0 + w])
    np.testing.assert_allclose(apply_affine(a, np.array([0.0, 0.0])), [x0, y0])
    out = model.run(model.preprocess(crop[None]))[0]
    expect = (img[y0:y0 + h, x0:x0 + w, ::-1].astype(np.float32) - np.array(mean, np.float32)) / np.array(std)
    np.testing.assert_allclose(out[0], expect.transpose(2, 0, 1), rtol=1e-6, atol=1e-5)


def test_rotated_crop_samples_where_the_affine_says(rng):
    """A float image whose channels are the pixel's own (x, y): bilinear sampling reproduces linear functions, so
    every crop pixel must hold the image point crop_to_image_affine assigns to it (OpenCV's warp quantizes
    sub-pixel positions to 1/32)."""
    h, w = 300, 400
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xs, ys, np.zeros_like(xs)], -1)
    for roi in ([200.3, 140.7, 150.0, 110.0, 0.7], [180.0, 150.0, 90.0, 90.0, -2.4], [210.5, 160.2, 300.0, 240.0,
                                                                                     np.pi / 2]):
        roi = np.array(roi)
        crop, a = warp_crop(img, roi, 64, 48)
        pj, pi = np.mgrid[0:48, 0:64]
        where = apply_affine(a, np.stack([pi, pj], -1).astype(np.float64))
        inside = (where[..., 0] > 1) & (where[..., 0] < w - 2) & (where[..., 1] > 1) & (where[..., 1] < h - 2)
        assert inside.mean() > 0.9
        np.testing.assert_allclose(crop[..., :2][inside], where[inside], atol=1 / 16)


def test_roi_rotation_convention():
    # MediaPipe: the crop's up-axis is the image up-axis turned clockwise (on screen) by the rotation.
    a = crop_to_image_affine(np.array([100.0, 100.0, 50.0, 50.0, np.pi / 2]), 50, 50)
    up_crop = apply_affine(a, np.array([25.0, 0.0])) - apply_affine(a, np.array([25.0, 25.0]))
    np.testing.assert_allclose(up_crop, [25.0, 0.0], atol=1e-9)  # crop "up" looks at image +x
    # The alignment ROI turns the centre -> scale-point direction to crop-up.
    for ang in (0.0, 0.4, 2.0, -2.8):
        d = np.array([np.sin(ang), -np.cos(ang)]) * 40.0  # image direction at `ang` clockwise from up
        roi = roi_from_alignment_points(np.array([[300.0, 200.0]]), np.array([[300.0, 200.0]]) + d, scale=1.25)[0]
        np.testing.assert_allclose(roi[2:4], [100.0, 100.0])
        a = crop_to_image_affine(roi, 256, 256)
        top = apply_affine(a, np.array([128.0, 128.0 - 256 * 0.4]))  # 0.4 of the ROI up from the centre
        np.testing.assert_allclose(top, [300.0, 200.0] + d, atol=1e-9)


def test_letterbox_center_and_top_left(rng):
    img = rng.integers(0, 256, (100, 50, 3), dtype=np.uint8)
    out, a = letterbox(img, 64, 64, align="center", pad_value=0)
    assert out.shape == (64, 64, 3)
    assert out[:, :14].max() == 0 and out[:, -14:].max() == 0  # 50 wide at scale 0.64 -> 32 px + 16 px padding
    np.testing.assert_allclose(apply_affine(a, np.array([32.0, 32.0])), [25.0, 50.0])  # centre -> centre (W/2, H/2)
    out, a = letterbox(img, 64, 64, align="top_left", pad_value=114)
    assert (out[:, 32:] == 114).all() and out[:, :32].std() > 10
    np.testing.assert_allclose(apply_affine(a, np.array([32.0, 64.0])), [50.0, 100.0])


def test_box_to_roi_fixes_aspect_and_pads():
    rois = box_to_roi(np.array([[10, 20, 50, 220], [0, 0, 300, 100]]), aspect=192 / 256, padding=1.25)
    np.testing.assert_allclose(rois[0], [30, 120, 150 * 1.25, 200 * 1.25, 0])
    np.testing.assert_allclose(rois[1], [150, 50, 300 * 1.25, 400 * 1.25, 0])


# ----------------------------------------------------------------------------------------------------------------
# heatmap / SimCC models
# ----------------------------------------------------------------------------------------------------------------

def test_dark_recovers_gaussian_peak_and_quarter_offset():
    true = np.array([[20.3, 30.6], [10.8, 5.2], [40.45, 50.5]])
    hm = np.stack([gaussian(64, 48, x, y, 2.0) for x, y in true])[None]
    xy, val = decode_heatmaps(hm, "dark", 11)
    np.testing.assert_allclose(xy[0], true, atol=0.02)
    xy0, _ = decode_heatmaps(hm, "none")
    np.testing.assert_array_equal(xy0[0], np.round(true))
    xyq, _ = decode_heatmaps(hm, "quarter")
    np.testing.assert_allclose(xyq[0], np.round(true) + 0.25 * np.sign(true - np.round(true)))
    assert (val > 0.9).all()
    # An all-zero heatmap is "no keypoint".
    xz, vz = decode_heatmaps(np.zeros((1, 1, 8, 8)), "dark")
    assert (xz == -1).all() and (vz == 0).all()


def test_heatmap_model_end_to_end(tmp_path):
    """Known heatmap peaks -> image keypoints through crop, decoding and the inverse affine."""
    w, h, hw, hh = 192, 256, 48, 64
    peaks = np.array([[12.25, 20.5], [30.0, 40.0], [5.7, 55.1]] + [[24.0, 32.0]] * 14)
    hm = np.stack([gaussian(hh, hw, x, y) for x, y in peaks])[None]
    path = constant_model(tmp_path / "hm.onnx", [1, 3, h, w], {"heatmaps": hm})
    card = make_card({"kind": "topdown_heatmap", "input_size": [w, h], "layout": "nchw", "refine": "dark"})
    model = TopDownModel(dataclasses.replace(card, path=str(path)))
    img = np.zeros((480, 640, 3), np.uint8)
    roi = box_to_roi(np.array([[100.0, 50.0, 250.0, 400.0]]), w / h, 1.25)
    kp = model(img, roi)
    assert kp.shape == (1, 17, 3)
    a = crop_to_image_affine(roi[0], w, h)
    expect = apply_affine(a, peaks * (w / hw))  # heatmap cell -> crop pixel (x stride 4) -> image
    np.testing.assert_allclose(kp[0, :, :2], expect, atol=0.03 * 4 * roi[0, 2] / w)
    assert (kp[0, :, 2] > 0.9).all()


def test_simcc_model_end_to_end(tmp_path):
    w, h, ratio = 192, 256, 2.0
    sx = np.full((1, 17, int(w * ratio)), -1.0)
    sy = np.full((1, 17, int(h * ratio)), -1.0)
    bx = np.arange(17) * 20 + 7
    by = np.arange(17) * 25 + 3
    sx[0, np.arange(17), bx] = np.linspace(0.2, 0.9, 17)
    sy[0, np.arange(17), by] = 0.5
    sx[0, 3] = -1.0  # keypoint 3 has no positive response: missing
    path = constant_model(tmp_path / "simcc.onnx", [1, 3, h, w], {"simcc_x": sx, "simcc_y": sy})
    card = make_card({"kind": "topdown_simcc", "input_size": [w, h], "layout": "nchw",
                      "simcc_split_ratio": ratio})
    model = TopDownModel(dataclasses.replace(card, path=str(path)))
    rois = np.array([[320.0, 240.0, 150.0, 200.0, 0.0], [100.0, 100.0, 75.0, 100.0, 0.0]])
    kp = model(np.zeros((480, 640, 3), np.uint8), rois)
    for i in range(2):
        a = crop_to_image_affine(rois[i], w, h)
        expect = apply_affine(a, np.stack([bx, by], 1) / ratio)
        ok = np.arange(17) != 3
        np.testing.assert_allclose(kp[i, ok, :2], expect[ok], atol=1e-9)
        np.testing.assert_allclose(kp[i, ok, 2], np.minimum(np.linspace(0.2, 0.9, 17), 0.5)[ok])
        assert kp[i, 3].tolist() == [0.0, 0.0, 0.0]
    xy, val = decode_simcc(sx, sy, ratio)
    np.testing.assert_allclose(xy[0, 0], [3.5, 1.5])


# ----------------------------------------------------------------------------------------------------------------
# BlazePose host-side logic
# ----------------------------------------------------------------------------------------------------------------

def test_ssd_anchors_layout():
    a = ssd_anchors(224, 224, (8, 16, 32, 32, 32), (2, 2, 2, 2, 2))
    assert a.shape == (2254, 2)  # 28*28*2 + 14*14*2 + 7*7*6
    np.testing.assert_allclose(a[0], [4, 4])
    np.testing.assert_allclose(a[1], [4, 4])
    np.testing.assert_allclose(a[2], [12, 4])  # x runs fastest
    np.testing.assert_allclose(a[1568], [8, 8])  # first stride-16 cell
    np.testing.assert_allclose(a[1568 + 392: 1568 + 392 + 6], [[16, 16]] * 6)  # 3 stride-32 layers share a map
    np.testing.assert_allclose(a[-1], [208, 208])


def test_weighted_nms_averages_overlapping_group():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.6, 0.8])
    extra = np.array([[0.0], [10.0], [5.0]])
    b, s, e = weighted_nms(boxes, scores, extra, 0.3, 10)
    np.testing.assert_allclose(s, [0.9, 0.8])
    np.testing.assert_allclose(b[0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)
    np.testing.assert_allclose(e[:, 0], [6.0 / 1.5, 5.0])
    keep = nms(boxes, scores, 0.3, 10)
    assert keep.tolist() == [0, 2]


def _blaze_detector_card(path):
    return load_model_card(path, card_path=Path(__file__).parents[1] / "models/blazepose_detector.toml")


def test_blazepose_detector_decode_with_synthetic_outputs(tmp_path):
    """One anchor fires with known offsets: box, keypoints and the body ROI land where MediaPipe's formulas say."""
    raw = np.zeros((1, 2254, 12), np.float32)
    logits = np.full((1, 2254, 1), -10.0, np.float32)
    i = 1568 + 2 * (14 * 5 + 6)  # stride-16 cell (x=6, y=5): anchor centre (104, 88)
    raw[0, i] = [3.0, -2.0, 40.0, 40.0, 0.0, 20.0, 0.0, -30.0, 0, 0, 0, 0]
    logits[0, i] = 3.0
    path = constant_model(tmp_path / "det.onnx", [1, 224, 224, 3], {"regressors": raw, "scores": logits})
    det = BlazePoseDetector(_blaze_detector_card(path))
    img = np.zeros((448, 224, 3), np.uint8)  # portrait 1:2 -> letterbox scale 2, 56 px padding each side
    d = det(img)
    assert d.num_people == 1
    np.testing.assert_allclose(d.scores, [1 / (1 + np.exp(-3.0))])
    a = crop_to_image_affine(np.array([112.0, 224.0, 448.0, 448.0, 0.0]), 224, 224)
    np.testing.assert_allclose(d.boxes[0], apply_affine(a, np.array([[87.0, 66.0], [127.0, 106.0]])).ravel())
    kp0 = apply_affine(a, np.array([104.0, 108.0]))
    kp1 = apply_affine(a, np.array([104.0, 58.0]))
    np.testing.assert_allclose(d.keypoints[0, :2], [kp0, kp1])
    side = 2 * np.linalg.norm(kp1 - kp0) * 1.25
    np.testing.assert_allclose(d.rois[0], [kp0[0], kp0[1], side, side, 0.0], atol=1e-9)


def test_blazepose_landmark_decode_and_heatmap_refinement(tmp_path):
    lm = np.zeros((39, 5), np.float32)
    lm[:, 0] = np.linspace(10, 240, 39)
    lm[:, 1] = np.linspace(200, 30, 39)
    lm[:, 3] = 3.0
    lm[:, 4] = -1.0
    hm = np.full((1, 64, 64, 39), -8.0, np.float32)
    path = constant_model(tmp_path / "lm.onnx", [1, 256, 256, 3], {
        "landmarks": lm.reshape(1, 195), "pose_flag": np.array([[0.97]], np.float32), "heatmap": hm})
    card = load_model_card(path, card_path=Path(__file__).parents[1] / "models/blazepose_landmark_full.toml")
    lmk = BlazePoseLandmarker(card)
    roi = np.array([[300.0, 400.0, 500.0, 500.0, 0.3]])
    res = lmk(np.zeros((800, 600, 3), np.uint8), roi)
    a = crop_to_image_affine(roi[0], 256, 256)
    np.testing.assert_allclose(res.landmarks[0, :, :2], apply_affine(a, lm[:33, :2].astype(np.float64)), atol=1e-4)
    np.testing.assert_allclose(res.auxiliary[0], apply_affine(a, lm[33:, :2].astype(np.float64)), atol=1e-4)
    np.testing.assert_allclose(res.landmarks[0, :, 3], 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    np.testing.assert_allclose(res.pose_score, [0.97], rtol=1e-6)
    coco = res.coco17(card)
    np.testing.assert_allclose(coco[0, :, 2], 0.97 / (1 + np.exp(-3.0)), rtol=1e-6)
    # Heatmap refinement (upstream formula): a confident symmetric blob centred on cell (20, 12) moves the
    # landmark to exactly cell index / 64 of the ROI.
    hmap = np.full((64, 64, 2), -30.0)
    hmap[10:15, 18:23, 0] = 4.0
    xy = np.array([[21.3 / 64, 12.9 / 64], [0.5, 0.5]])
    out = refine_from_heatmap(xy, hmap, 7, 0.5)
    np.testing.assert_allclose(out[0], [20 / 64, 12 / 64], atol=1e-6)
    np.testing.assert_allclose(out[1], xy[1])  # not confident: unchanged


def test_roi_from_coco17_upright_and_rotated():
    # A rough upright skeleton (pixels, y down).
    base = np.array([[0, -160], [-8, -168], [8, -168], [-16, -164], [16, -164], [-40, -120], [40, -120],
                     [-50, -60], [50, -60], [-55, 0], [55, 0], [-20, 0], [20, 0], [-22, 90], [22, 90],
                     [-22, 180], [22, 180]], float)
    kp = np.concatenate([base + [300, 400], np.ones((17, 1))], 1)
    roi = roi_from_coco17(kp[None])[0]
    np.testing.assert_allclose(roi[:2], [300, 400])
    assert abs(roi[4]) < 1e-9
    r_expect = np.sqrt(((base - [0, 0]) ** 2).sum(1)).max() * 1.15
    np.testing.assert_allclose(roi[2], 2 * r_expect * 1.25)
    ang = 0.6
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    kp2 = np.concatenate([base @ rot.T + [300, 400], np.ones((17, 1))], 1)
    roi2 = roi_from_coco17(kp2[None])[0]
    np.testing.assert_allclose(roi2[4], ang, atol=0.02)  # shoulders are not exactly above the hips' centre
    # Too few valid keypoints -> NaN row; the batch keeps its order.
    kp3 = kp.copy()
    kp3[:, 2] = 0.0
    out = roi_from_coco17(np.stack([kp, kp3, kp2]))
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


# ----------------------------------------------------------------------------------------------------------------
# YOLOX / RTMDet
# ----------------------------------------------------------------------------------------------------------------

def test_yolox_raw_decode_and_nms(tmp_path):
    w = h = 64
    n = 8 * 8 + 4 * 4 + 2 * 2
    raw = np.zeros((1, n, 6), np.float32)
    raw[0, :, 2:4] = 0.0
    i = 5 * 8 + 3  # stride-8 grid cell (x=3, y=5)
    raw[0, i] = [0.5, 0.25, np.log(4.0), np.log(2.0), 0.9, 0.8]
    raw[0, i + 1] = [-0.4, 0.25, np.log(4.0), np.log(2.0), 0.5, 0.8]  # neighbour cell, same box: suppressed
    path = constant_model(tmp_path / "yolox.onnx", [1, 3, h, w], {"out": raw})
    card = make_card({"kind": "yolox", "input_size": [w, h], "layout": "nchw", "color": "bgr",
                      "mean": [0, 0, 0], "std": [1, 1, 1], "letterbox": "top_left", "pad_value": 114,
                      "output_format": "raw", "score_threshold": 0.3, "nms_iou": 0.5})
    det = BoxDetector(dataclasses.replace(card, path=str(path)))
    d = det(np.zeros((64, 128, 3), np.uint8))  # letterbox ratio 0.5: boxes x 2
    assert d.num_people == 1
    cx, cy, bw, bh = (3.5) * 8, (5.25) * 8, 32.0, 16.0
    np.testing.assert_allclose(d.boxes[0], np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]) * 2)
    np.testing.assert_allclose(d.scores, [0.72], rtol=1e-6)


def test_end2end_detector_keeps_persons_above_threshold(tmp_path):
    dets = np.array([[[10, 10, 30, 50, 0.9], [12, 10, 30, 52, 0.85], [100, 100, 120, 140, 0.95],
                      [40, 40, 60, 60, 0.2]]], np.float32)
    labels = np.array([[0, 0, 2, 0]], np.float32)  # the graph builder emits floats; labels compare by value
    path = constant_model(tmp_path / "rtmdet.onnx", [1, 3, 64, 64], {"dets": dets, "labels": labels})
    card = make_card({"kind": "rtmdet", "input_size": [64, 64], "layout": "nchw", "letterbox": "top_left",
                      "score_threshold": 0.3, "nms_iou": 0.5})
    d = BoxDetector(dataclasses.replace(card, path=str(path)))(np.zeros((128, 128, 3), np.uint8))
    np.testing.assert_allclose(d.scores, [0.9])
    np.testing.assert_allclose(d.boxes[0], np.array([10, 10, 30, 50]) * 2.0)


# ----------------------------------------------------------------------------------------------------------------
# model cards
# ----------------------------------------------------------------------------------------------------------------

def test_model_cards_validate_and_override(tmp_path):
    onnx_path = identity_model(tmp_path / "m.onnx", [1, 3, 256, 192])
    (tmp_path / "m.toml").write_text('kind = "topdown_heatmap"\ninput_size = [192, 256]\nlayout = "nchw"\n')
    card = load_model_card(onnx_path, parse_overrides(["refine=quarter", "padding=1.5", "mean=[1,2,3]"]))
    assert (card.refine, card.padding, card.mean, card.input_size) == ("quarter", 1.5, (1.0, 2.0, 3.0), (192, 256))
    assert card.coco17_indices == tuple(range(17))
    (tmp_path / "m.toml").write_text('kind = "topdown_heatmap"\ninput_sise = [192, 256]\n')
    with pytest.raises(ModelCardError, match=r"m\.toml, field 'input_sise': unknown key"):
        load_model_card(onnx_path)
    (tmp_path / "m.toml").write_text('kind = "topdown_heatmap"\nrefine = "best"\n')
    with pytest.raises(ModelCardError, match="field 'refine'"):
        load_model_card(onnx_path)
    (tmp_path / "m.toml").write_text('kind = "topdown_heatmap"\nmean = [1, 2]\n')
    with pytest.raises(ModelCardError, match="field 'mean'.*expected 3 values"):
        load_model_card(onnx_path)
    (tmp_path / "m.toml").unlink()
    with pytest.raises(ModelCardError, match="field 'kind': missing"):
        load_model_card(onnx_path)
    card = load_model_card(onnx_path, {"kind": "topdown_simcc", "input_size": [192, 256], "layout": "nchw"})
    assert card.kind == "topdown_simcc" and card.card_path == ""
    # The card must match the model's input.
    with pytest.raises(ModelCardError, match="input_size"):
        OnnxModel(dataclasses.replace(card, input_size=(256, 256)))
    with pytest.raises(ModelCardError, match="not of the form"):
        parse_overrides(["refine"])


def test_shipped_model_cards_load():
    root = Path(__file__).parents[1] / "models"
    d = load_model_card(root / "blazepose_detector.onnx")
    lm = load_model_card(root / "blazepose_landmark_full.onnx")
    assert d.kind == "blazepose_detector" and d.input_size == (224, 224)
    assert lm.kind == "blazepose_landmark" and lm.coco17_indices == (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23,
                                                                     24, 25, 26, 27, 28)


# ----------------------------------------------------------------------------------------------------------------
# front end
# ----------------------------------------------------------------------------------------------------------------

def test_front_end_given_rois_keeps_order_and_marks_missing(tmp_path):
    w, h = 192, 256
    sx = np.zeros((1, 17, 384))
    sy = np.zeros((1, 17, 512))
    sx[0, :, 200] = 0.8
    sy[0, :, 300] = 0.7
    path = constant_model(tmp_path / "rtmpose.onnx", [1, 3, h, w], {"simcc_x": sx, "simcc_y": sy})
    (tmp_path / "rtmpose.toml").write_text(
        'kind = "topdown_simcc"\ninput_size = [192, 256]\nlayout = "nchw"\nsimcc_split_ratio = 2.0\n')
    front = PoseFrontEnd.from_files(path)
    rois = np.array([[100.0, 100.0, 96.0, 128.0, 0.0], [np.nan] * 5, [300.0, 200.0, 192.0, 256.0, 0.0]])
    out = front.detect_frame(np.zeros((400, 500, 3), np.uint8), rois)
    assert out.shape == (3, 17, 3)
    assert (out[1] == 0).all()
    np.testing.assert_allclose(out[0, 0], [100 + (100 - 96) * 0.5, 100 + (150 - 128) * 0.5, 0.7])
    np.testing.assert_allclose(out[2, 0], [300 + (100 - 96), 200 + (150 - 128), 0.7])
    with pytest.raises(ModelCardError, match="no detector"):
        front.detect_frame(np.zeros((400, 500, 3), np.uint8))
    # ROIs from keypoints: the box around the valid keypoints, fitted to the model and padded.
    kp = np.zeros((1, 17, 3))
    kp[0, :, 0] = np.linspace(50, 110, 17)
    kp[0, :, 1] = np.linspace(20, 220, 17)
    kp[0, :, 2] = 1.0
    r = front.rois_from_keypoints(kp)
    np.testing.assert_allclose(r[0], [80, 120, 200 * 0.75 * 1.25, 200 * 1.25, 0])


# ----------------------------------------------------------------------------------------------------------------
# multi-camera readers
# ----------------------------------------------------------------------------------------------------------------

def _write_video(path: Path, n: int, size=(64, 48)) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert vw.isOpened()
    for t in range(n):
        vw.write(np.full((size[1], size[0], 3), 10 * t, np.uint8))
    vw.release()


def test_videos_of_different_length_are_truncated(tmp_path):
    _write_video(tmp_path / "cam1.avi", 5)
    _write_video(tmp_path / "cam2.avi", 4)
    with pytest.warns(UserWarning, match="different frame counts"):
        r = MultiCameraReader({"cam1": tmp_path / "cam1.avi", "cam2": tmp_path / "cam2.avi"})
    assert r.num_frames == 4
    seen = [(t, [int(np.round(f.mean())) for f in frames]) for t, frames in r.frames()]
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    for t, means in seen:  # MJPG is lossy but flat frames survive to +-2 levels
        assert all(abs(m - 10 * t) <= 2 for m in means)
    with pytest.raises(VideoError, match="different frame counts"):
        MultiCameraReader({"cam1": tmp_path / "cam1.avi", "cam2": tmp_path / "cam2.avi"},
                          on_length_mismatch="error")
    _, frames = next(iter(r.frames(2, 3)))
    assert abs(frames[0].mean() - 20) <= 2


def test_image_folders_with_gaps_and_calibration_sizes(tmp_path):
    for cam, numbers in (("cam01", [1, 2, 3, 4]), ("cam02", [1, 2, 4])):
        (tmp_path / cam).mkdir()
        for n in numbers:
            cv2.imwrite(str(tmp_path / cam / f"{n:05d}.png"), np.full((40, 60, 3), n * 20, np.uint8))
    src = {"cam01": tmp_path / "cam01", "cam02": tmp_path / "cam02"}
    with pytest.warns(UserWarning, match=r"camera 'cam02'\): 1 missing frame\(s\), numbers 3"):
        r = MultiCameraReader(src)
    got = {t: [None if f is None else int(f[0, 0, 0]) for f in frames] for t, frames in r.frames()}
    assert got == {0: [20, 20], 1: [40, 40], 2: [60, None], 3: [80, 80]}
    with pytest.raises(VideoError, match="cam02"):
        MultiCameraReader(src, on_missing="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Uniform scale: keypoints are mapped to calibration pixels.
        r = MultiCameraReader(src, calibration_sizes={"cam01": (120, 80), "cam02": (60, 40)})
        np.testing.assert_allclose(r.to_calibration, [[2, 2], [1, 1]])
        kp = np.ones((5, 2, 1, 17, 3))
        out = r.keypoints_to_calibration(kp)
        assert (out[:, 0, ..., :2] == 2).all() and (out[:, 1, ..., :2] == 1).all() and (out[..., 2] == 1).all()
        # Small non-uniform difference (like 1080 vs 1088): assumed padding, keypoints unchanged.
        r = MultiCameraReader(src, calibration_sizes=[(60, 40), (61, 40)], size_tolerance=0.02)
        assert any("padding" in m for m in r.messages)
    with pytest.raises(VideoError, match=r"camera 'cam02'.*60x40 but the calibration says 40x60"), \
            pytest.warns(UserWarning, match="missing frame"):
        MultiCameraReader(src, calibration_sizes={"cam02": (40, 60)}, on_missing="skip")
    with pytest.raises(VideoError, match="no such file"):
        MultiCameraReader({"cam09": tmp_path / "nope.mp4"})
