"""MediaPipe BlazePose (GHUM 3D, "full") on onnxruntime: person detector and landmark model.

Re-implements the host-side parts of MediaPipe's pose graphs (Apache-2.0; Bazarevsky et al., "BlazePose:
On-device Real-time Body Pose tracking", CVPR-W 2020) so the converted ONNX models run without MediaPipe:

- detector (`pose_detection_cpu.pbtxt`): letterbox to 224x224, SSD anchors (`SsdAnchorsCalculator`, fixed anchor
  size), box/keypoint decoding (`TensorsToDetectionsCalculator`), weighted NMS (`NonMaxSuppressionCalculator`,
  WEIGHTED), letterbox removal; then the body ROI (`pose_detection_to_roi.pbtxt`: centre = mid-hip keypoint,
  side = 2 |kp1 - kp0| x 1.25, rotation making kp0 -> kp1 point up).
- landmarks (`pose_landmark_by_roi_cpu.pbtxt`, `tensors_to_pose_landmarks_and_segmentation.pbtxt`): rotated ROI
  crop to 256x256 in [0, 1] (replicated border), 39 x (x, y, z, visibility logit, presence logit) in crop pixels,
  heatmap refinement (`RefineLandmarksFromHeatmapCalculator`, kernel 7), projection back to the image.

All coordinates returned are image pixels in the centre convention of `h4djax.detect.crop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, UInt8

from h4djax.detect.cards import ModelCard
from h4djax.detect.crop import apply_affine, letterbox, warp_crop
from h4djax.detect.runtime import OnnxModel

NUM_LANDMARKS = 39  # 33 body landmarks + 6 auxiliary (33: hip centre, 34: size/rotation point, ...)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows (float32 logits can reach +-100 after clipping).
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def ssd_anchors(
    input_w: int, input_h: int, strides: tuple[int, ...], anchors_per_cell: tuple[int, ...], offset: float = 0.5
) -> Float[np.ndarray, "anchors 2"]:
    """Anchor centres in tensor pixels of MediaPipe's SsdAnchorsCalculator with
    `fixed_anchor_size: true` (anchor width = height = 1, so only the centres matter).

    Consecutive layers with the same stride share one feature map; their anchors are interleaved per cell
    (upstream loops layer groups -> rows -> columns -> anchors of the group).
    """
    out = []
    i = 0
    while i < len(strides):
        j = i
        n_cell = 0
        while j < len(strides) and strides[j] == strides[i]:
            n_cell += anchors_per_cell[j]
            j += 1
        fw = int(np.ceil(input_w / strides[i]))
        fh = int(np.ceil(input_h / strides[i]))
        ys, xs = np.meshgrid((np.arange(fh) + offset) / fh, (np.arange(fw) + offset) / fw, indexing="ij")
        cell = np.stack([xs.ravel() * input_w, ys.ravel() * input_h], axis=1)
        out.append(np.repeat(cell, n_cell, axis=0))
        i = j
    return np.concatenate(out, axis=0)


def weighted_nms(
    boxes: Float[np.ndarray, "n 4"],
    scores: Float[np.ndarray, "n"],
    extra: Float[np.ndarray, "n d"],
    iou_threshold: float,
    max_out: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression on `xyxy` boxes.

    Take the best remaining detection, gather every remaining detection overlapping it with IoU > threshold
    (itself included), replace its box and `extra` values (keypoints) by the score-weighted mean of the group, keep
    its own score, drop the group. Returns (boxes, scores, extra) of the kept detections, best first.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores, extra = boxes[order], scores[order], extra[order]
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    alive = np.ones(len(scores), bool)
    kb, ks, ke = [], [], []
    for i in range(len(scores)):  # runs over the few candidates above the score threshold, not over anchors
        if not alive[i] or len(kb) >= max_out:
            continue
        idx = np.flatnonzero(alive)
        x1 = np.maximum(boxes[i, 0], boxes[idx, 0])
        y1 = np.maximum(boxes[i, 1], boxes[idx, 1])
        x2 = np.minimum(boxes[i, 2], boxes[idx, 2])
        y2 = np.minimum(boxes[i, 3], boxes[idx, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        union = area[i] + area[idx] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        group = idx[(iou > iou_threshold) | (idx == i)]
        w = scores[group][:, None]
        kb.append((boxes[group] * w).sum(0) / w.sum())
        ke.append((extra[group] * w).sum(0) / w.sum())
        ks.append(scores[i])
        alive[group] = False
    if not kb:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, extra.shape[1]))
    return np.stack(kb), np.asarray(ks), np.stack(ke)


def roi_from_alignment_points(
    center: Float[np.ndarray, "n 2"],
    scale_point: Float[np.ndarray, "n 2"],
    *,
    scale: float = 1.25,
    target_angle_deg: float = 90.0,
) -> Float[np.ndarray, "n 5"]:
    """MediaPipe AlignmentPointsRectsCalculator + RectTransformationCalculator(square_long) in pixels.

    The ROI is centred on `center`, is a square of side 2 |scale_point - center| x `scale`, and is rotated so that
    the centre -> scale_point direction points at `target_angle_deg` (90 = up) in the crop.
    """
    d = np.asarray(scale_point, np.float64) - np.asarray(center, np.float64)
    side = 2.0 * np.sqrt((d ** 2).sum(-1)) * scale
    rot = np.deg2rad(target_angle_deg) - np.arctan2(-d[:, 1], d[:, 0])
    rot = rot - 2.0 * np.pi * np.floor((rot + np.pi) / (2.0 * np.pi))  # wrap to [-pi, pi)
    return np.stack([center[:, 0], center[:, 1], side, side, rot], axis=1)


@dataclass(frozen=True)
class Detections:
    """Person detections in one image (pixels, centre convention).

    boxes: f[people, 4] xyxy (BlazePose: the face box the detector regresses; YOLOX/RTMDet: the person box);
    scores: f[people]; keypoints: f[people, kpts, 2] (BlazePose: mid-hip, full-body size/rotation point,
    mid-shoulder, upper-body point; empty for box detectors); rois: f[people, 5] (cx, cy, w, h, rotation) for the
    keypoint model.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    rois: np.ndarray

    @property
    def num_people(self) -> int:
        return int(self.scores.shape[0])


class BlazePoseDetector:
    """BlazePose person detector (224x224, 2,254 SSD anchors, 4 keypoints per detection)."""

    def __init__(self, card: ModelCard, *, threads: int = 2, device: str = "auto"):
        if card.kind != "blazepose_detector":
            raise ValueError(f"card kind {card.kind!r} is not blazepose_detector")
        self.card = card
        self.model = OnnxModel(card, threads=threads, device=device)
        w, h = card.input_size
        self.anchors = ssd_anchors(w, h, card.strides, card.anchors_per_cell)

    def input_tensor(self, image: UInt8[np.ndarray, "H W 3"]) -> tuple[np.ndarray, np.ndarray]:
        """Letterboxed, normalized model input [1, 224, 224, 3] and the tensor -> image affine."""
        w, h = self.card.input_size
        crop, crop2img = letterbox(image, w, h, align=self.card.letterbox, pad_value=self.card.pad_value)
        return self.model.preprocess(crop[None]), crop2img

    def decode(
        self, raw_boxes: Float[np.ndarray, "anchors 12"], raw_scores: Float[np.ndarray, "anchors"],
        crop2img: Float[np.ndarray, "2 3"],
    ) -> Detections:
        """TensorsToDetections + weighted NMS + letterbox removal + body ROI (see module docstring)."""
        c = self.card
        n_kp = (raw_boxes.shape[1] - 4) // 2
        a = self.anchors
        # fixed_anchor_size and x_scale = input width: offsets are in tensor pixels around the anchor centre
        # (reverse_output_order: x before y).
        scores = _sigmoid(np.clip(raw_scores.astype(np.float64), -c.score_clip, c.score_clip))
        keep = scores >= c.score_threshold
        rb = raw_boxes[keep].astype(np.float64)
        ak = a[keep]
        cx, cy = rb[:, 0] + ak[:, 0], rb[:, 1] + ak[:, 1]
        bw, bh = rb[:, 2], rb[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = rb[:, 4:4 + 2 * n_kp].reshape(-1, n_kp, 2) + ak[:, None, :]
        boxes, sc, kps = weighted_nms(boxes, scores[keep], kps.reshape(len(kps), 2 * n_kp), c.nms_iou, c.max_people)
        kps = kps.reshape(-1, n_kp, 2)
        # Tensor coordinates -> image (letterbox affine; crop convention of h4djax.detect.crop).
        boxes_img = apply_affine(crop2img, boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        kps_img = apply_affine(crop2img, kps)
        i0, i1 = c.roi_keypoints
        rois = roi_from_alignment_points(
            kps_img[:, i0], kps_img[:, i1], scale=c.roi_scale, target_angle_deg=c.roi_target_angle_deg
        ) if len(sc) else np.zeros((0, 5))
        return Detections(boxes=boxes_img, scores=sc, keypoints=kps_img, rois=rois)

    def raw(self, image: UInt8[np.ndarray, "H W 3"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model outputs for one RGB image: (raw boxes [2254, 12], score logits [2254], tensor -> image affine)."""
        x, crop2img = self.input_tensor(image)
        outs = self.model.run(x)
        by_last = {o.shape[-1]: o for o in outs}
        return by_last[12].reshape(-1, 12), by_last[1].reshape(-1), crop2img

    def __call__(self, image: UInt8[np.ndarray, "H W 3"]) -> Detections:
        """Detect people in one RGB uint8 image."""
        raw_boxes, raw_scores, crop2img = self.raw(image)
        return self.decode(raw_boxes, raw_scores, crop2img)


@dataclass(frozen=True)
class Landmarks:
    """BlazePose landmarks of people in one image.

    landmarks: f[people, 33, 5]: x, y (image pixels), z (pixels, relative depth, hips ~0, smaller = nearer the
    camera), visibility, presence (probabilities); auxiliary: f[people, 6, 2] image pixels (33: hip centre,
    34: full-body size/rotation point: the ROI for the next frame); pose_score: f[people] pose presence
    probability; rois: f[people, 5] the ROIs used.
    """

    landmarks: np.ndarray
    auxiliary: np.ndarray
    pose_score: np.ndarray
    rois: np.ndarray

    def coco17(self, card: ModelCard) -> Float[np.ndarray, "people 17 3"]:
        """COCO-17 keypoints (x px, y px, confidence = visibility x pose presence)."""
        idx = np.asarray(card.coco17_indices)
        lm = self.landmarks[:, idx]
        conf = lm[..., 3] * self.pose_score[:, None]
        return np.concatenate([lm[..., :2], conf[..., None]], axis=-1)


def refine_from_heatmap(
    xy_norm: Float[np.ndarray, "k 2"], heatmap: Float[np.ndarray, "hh hw k"], kernel: int, min_conf: float
) -> Float[np.ndarray, "k 2"]:
    """MediaPipe RefineLandmarksFromHeatmapCalculator on normalized ROI coordinates.

    For each landmark: the heatmap cell under it (truncating cast, as upstream), a `kernel` window clipped to the
    heatmap, sigmoid confidences; if the window's max confidence >= `min_conf`, the landmark becomes the
    confidence-weighted mean of the window's cell indices divided by the heatmap size (upstream uses the cell
    index, not its centre, consistently with how the model was trained to place its heatmap peaks).
    """
    hh, hw, k = heatmap.shape
    xy_norm = np.asarray(xy_norm, np.float64)
    col = np.trunc(xy_norm[:, 0] * hw).astype(np.int64)  # C++ int conversion truncates toward zero
    row = np.trunc(xy_norm[:, 1] * hh).astype(np.int64)
    inside = (col >= 0) & (col < hw) & (row >= 0) & (row < hh)
    off = (kernel - 1) // 2
    # Clipping the window at the border == zero confidence outside the heatmap: pad the logits with -inf
    # (sigmoid -> 0), gather the k windows, and take the sigmoid of those few values only.
    padded = np.pad(np.asarray(heatmap, np.float64), ((off, off), (off, off), (0, 0)), constant_values=-np.inf)
    d = np.arange(-off, off + 1)
    rr = np.clip(row, 0, hh - 1)[:, None, None] + d[None, :, None]  # [k, kernel, 1] heatmap rows
    cc = np.clip(col, 0, hw - 1)[:, None, None] + d[None, None, :]  # [k, 1, kernel]
    conf = _sigmoid(padded[rr + off, cc + off, np.arange(k)[:, None, None]])  # [k, kernel, kernel]
    s = conf.sum((1, 2))
    ok = inside & (conf.max((1, 2)) >= min_conf) & (s > 0)
    s_safe = np.where(s > 0, s, 1.0)
    new_x = (conf * cc).sum((1, 2)) / hw / s_safe
    new_y = (conf * rr).sum((1, 2)) / hh / s_safe
    return np.where(ok[:, None], np.stack([new_x, new_y], axis=1), xy_norm)


class BlazePoseLandmarker:
    """BlazePose landmark model (full) on rotated ROIs."""

    def __init__(self, card: ModelCard, *, threads: int = 2, device: str = "auto"):
        if card.kind != "blazepose_landmark":
            raise ValueError(f"card kind {card.kind!r} is not blazepose_landmark")
        self.card = card
        self.model = OnnxModel(card, threads=threads, device=device)

    def _outputs(self, outs: list[np.ndarray]) -> dict[str, np.ndarray]:
        named = dict(zip(self.model.output_names, outs))
        if "landmarks" in named:
            return named
        # Unnamed export: identify tensors by shape (landmarks 39*5, pose flag 1, heatmap [.., .., 39]).
        res = {}
        for o in outs:
            if o.ndim == 2 and o.shape[1] == NUM_LANDMARKS * 5:
                res["landmarks"] = o
            elif o.ndim == 2 and o.shape[1] == 1:
                res["pose_flag"] = o
            elif o.ndim == 4 and o.shape[-1] == NUM_LANDMARKS:
                res["heatmap"] = o
        return res

    def crops(self, image: UInt8[np.ndarray, "H W 3"], rois: Float[np.ndarray, "people 5"]):
        """ROI crops [people, 256, 256, 3] (uint8) and their crop -> image affines [people, 2, 3]."""
        w, h = self.card.input_size
        cs, affs = [], []
        for roi in rois:
            crop, a = warp_crop(image, roi, w, h, border=self.card.border, border_value=self.card.border_value)
            cs.append(crop)
            affs.append(a)
        return np.stack(cs), np.stack(affs)

    def __call__(self, image: UInt8[np.ndarray, "H W 3"], rois: Float[np.ndarray, "people 5"]) -> Landmarks:
        """Landmarks for each ROI (cx, cy, w, h, rotation) of one RGB uint8 image."""
        rois = np.asarray(rois, np.float64).reshape(-1, 5)
        p = rois.shape[0]
        if p == 0:
            return Landmarks(np.zeros((0, 33, 5)), np.zeros((0, 6, 2)), np.zeros((0,)), rois)
        crops, affs = self.crops(image, rois)
        outs = self._outputs(self.model.run(self.model.preprocess(crops)))
        return self.decode(outs["landmarks"], outs["pose_flag"], outs.get("heatmap"), affs, rois)

    def decode(self, raw_landmarks, pose_flag, heatmap, affs, rois) -> Landmarks:
        """Raw model outputs for `people` crops -> Landmarks in image pixels."""
        c = self.card
        w, h = c.input_size
        p = rois.shape[0]
        lm = np.asarray(raw_landmarks, np.float64).reshape(p, NUM_LANDMARKS, 5)
        xy_norm = lm[..., :2] / np.array([w, h])
        if c.heatmap_refine and heatmap is not None:
            xy_norm = np.stack([
                refine_from_heatmap(xy_norm[i], np.asarray(heatmap[i], np.float64), c.heatmap_kernel,
                                    c.heatmap_min_conf) for i in range(p)
            ])
        # The model's crop-pixel outputs are crop coordinates of h4djax.detect.crop's convention, as in MediaPipe's
        # LandmarkProjectionCalculator (roi centre + rotated (x / 256 - 0.5) * roi size).
        crop_xy = xy_norm * np.array([w, h])
        img_xy = np.einsum("pij,pkj->pki", affs[:, :, :2], crop_xy) + affs[:, None, :, 2]
        # LandmarkProjectionCalculator scales z by the ROI width (z is normalized by the tensor width).
        z = lm[..., 2] / w * rois[:, 2:3]
        vis, pres = _sigmoid(lm[..., 3]), _sigmoid(lm[..., 4])
        # The pose flag is already a probability (upstream applies no activation to it).
        score = np.asarray(pose_flag, np.float64).reshape(p)
        full = np.concatenate([img_xy, z[..., None], vis[..., None], pres[..., None]], axis=-1)
        return Landmarks(landmarks=full[:, :33], auxiliary=img_xy[:, 33:], pose_score=score, rois=rois)

    def roi_from_landmarks(self, lms: Landmarks) -> Float[np.ndarray, "people 5"]:
        """Tracking ROI for the next frame from the auxiliary landmarks (MediaPipe pose_landmarks_to_roi)."""
        return roi_from_alignment_points(
            lms.auxiliary[:, 0], lms.auxiliary[:, 1], scale=self.card.roi_scale,
            target_angle_deg=self.card.roi_target_angle_deg,
        )


def roi_from_coco17(
    kpts: Float[np.ndarray, "people 17 3"],
    *,
    min_conf: float = 0.3,
    margin: float = 1.15,
    scale: float = 1.25,
    target_angle_deg: float = 90.0,
) -> Float[np.ndarray, "people 5"]:
    """BlazePose-style ROIs from COCO-17 keypoints (e.g. a projected 3D estimate of the previous frame).

    Mirrors the detector's alignment: centre = mid-hip (box centre of the valid keypoints if a hip is missing),
    up-direction = mid-hip -> mid-shoulder (image up if a hip or shoulder is missing), radius = the farthest valid
    keypoint from the centre x `margin` (COCO-17 has no top of head or toe tips), side = 2 x radius x `scale`.
    People with fewer than 2 valid keypoints get a NaN ROI.
    """
    kpts = np.asarray(kpts, np.float64).reshape(-1, 17, 3)
    if kpts.shape[0] == 0:
        return np.zeros((0, 5))
    xy = np.nan_to_num(kpts[..., :2])
    v = (kpts[..., 2] > min_conf) & np.isfinite(kpts[..., :2]).all(-1)  # [p, 17]
    vm = v[..., None]
    lo = np.where(vm, xy, np.inf).min(1)
    hi = np.where(vm, xy, -np.inf).max(1)
    hips = v[:, 11] & v[:, 12]
    torso = hips & v[:, 5] & v[:, 6]
    with np.errstate(invalid="ignore"):  # people without valid keypoints: inf - inf, masked at the end
        c = np.where(hips[:, None], 0.5 * (xy[:, 11] + xy[:, 12]), 0.5 * (lo + hi))
    up = np.where(torso[:, None], 0.5 * (xy[:, 5] + xy[:, 6]) - c, np.array([0.0, -1.0]))
    n = np.sqrt((up ** 2).sum(-1, keepdims=True))
    up = np.where(n > 1e-9, up / np.where(n > 1e-9, n, 1.0), np.array([0.0, -1.0]))
    r = np.where(v, np.sqrt(((xy - c[:, None]) ** 2).sum(-1)), 0.0).max(1) * margin
    r = np.maximum(r, 1.0)
    rois = roi_from_alignment_points(c, c + r[:, None] * up, scale=scale, target_angle_deg=target_angle_deg)
    return np.where((v.sum(1) >= 2)[:, None], rois, np.nan)
