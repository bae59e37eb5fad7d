"""The 2D front end the pipeline calls: a person detector + a keypoint model -> COCO-17 keypoints per person.

    front = PoseFrontEnd.from_files("models/blazepose_landmark_full.onnx", "models/blazepose_detector.onnx")
    kpts = front.detect_frame(rgb)              # f[people, 17, 3] (x px, y px, confidence), detector ROIs
    kpts = front.detect_frame(rgb, rois)        # one row per given ROI, in the given order (person identity)
    rois = front.rois_from_keypoints(kpts_prev) # ROIs from (projected) COCO-17 keypoints of a previous estimate

ROIs are f[people, 5] = (cx, cy, width, height, rotation) in image pixels / radians (see h4djax.detect.crop).
Missing keypoints have confidence 0 and coordinates 0 (FORMATS.md); a NaN ROI row gives an all-missing person.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, UInt8

from h4djax.detect.blazepose import (
    BlazePoseDetector, BlazePoseLandmarker, Detections, roi_from_alignment_points, roi_from_coco17,
)
from h4djax.detect.cards import DETECTOR_KINDS, KEYPOINT_KINDS, ModelCard, load_model_card
from h4djax.detect.crop import box_to_roi
from h4djax.detect.detectors import BoxDetector
from h4djax.detect.errors import ModelCardError
from h4djax.detect.topdown import TopDownModel


@dataclass(frozen=True)
class FrameKeypoints:
    """Keypoints of the people in one image.

    coco17: f[people, 17, 3] (x px, y px, confidence; 0 = missing); full: f[people, kpts, 3] in the model's own
    keypoint set (BlazePose: 33 landmarks with confidence = visibility x pose presence); rois: f[people, 5] used;
    scores: f[people] person score (detector score, or BlazePose pose presence when ROIs were given).
    """

    coco17: np.ndarray
    full: np.ndarray
    rois: np.ndarray
    scores: np.ndarray


def make_detector(card: ModelCard, *, threads: int = 2, device: str = "auto"):
    if card.kind == "blazepose_detector":
        return BlazePoseDetector(card, threads=threads, device=device)
    if card.kind in ("yolox", "rtmdet"):
        return BoxDetector(card, threads=threads, device=device)
    raise ModelCardError(card.card_path or card.path, "kind", f"{card.kind!r} is not a detector ({DETECTOR_KINDS})")


def make_keypoint_model(card: ModelCard, *, threads: int = 2, device: str = "auto"):
    if card.kind == "blazepose_landmark":
        return BlazePoseLandmarker(card, threads=threads, device=device)
    if card.kind in ("topdown_heatmap", "topdown_simcc"):
        return TopDownModel(card, threads=threads, device=device)
    raise ModelCardError(card.card_path or card.path, "kind",
                         f"{card.kind!r} is not a keypoint model ({KEYPOINT_KINDS})")


class PoseFrontEnd:
    """Detector (optional: ROIs may always be given) + keypoint model."""

    def __init__(self, keypoint_card: ModelCard, detector_card: ModelCard | None = None, *,
                 threads: int = 2, device: str = "auto"):
        self.keypoint_model = make_keypoint_model(keypoint_card, threads=threads, device=device)
        self.detector = make_detector(detector_card, threads=threads, device=device) if detector_card else None
        self.kcard = keypoint_card
        self.dcard = detector_card

    @classmethod
    def from_files(
        cls, keypoint_model: str | Path, detector: str | Path | None = None, *,
        keypoint_overrides: dict[str, Any] | None = None, detector_overrides: dict[str, Any] | None = None,
        threads: int = 2, device: str = "auto",
    ) -> "PoseFrontEnd":
        """Load models and their cards (`.toml` beside each `.onnx`, with overrides)."""
        kc = load_model_card(keypoint_model, keypoint_overrides)
        dc = load_model_card(detector, detector_overrides) if detector is not None else None
        return cls(kc, dc, threads=threads, device=device)

    @classmethod
    def from_config(cls, cfg, *, root: str | Path = ".", keypoint_overrides=None, detector_overrides=None,
                    device: str = "auto") -> "PoseFrontEnd":
        """From `h4djax.config.DetectConfig` (detector, keypoint_model, threads, min_score); relative model paths
        are resolved against `root` (the repository for the shipped models)."""
        root = Path(root)
        det_over = {"score_threshold": cfg.min_score, **(detector_overrides or {})}
        kp = Path(cfg.keypoint_model)
        det = Path(cfg.detector) if cfg.detector else None
        return cls.from_files(kp if kp.is_absolute() else root / kp,
                              (det if det.is_absolute() else root / det) if det is not None else None,
                              keypoint_overrides=keypoint_overrides, detector_overrides=det_over,
                              threads=cfg.threads, device=device)

    # ---------------------------------------------------------------------------------------------------------
    def detect(self, image: UInt8[np.ndarray, "H W 3"]) -> Detections:
        """Run the person detector on one RGB uint8 image."""
        if self.detector is None:
            raise ModelCardError(self.kcard.path, None, "no detector configured: pass ROIs to detect_frame")
        return self.detector(image)

    def rois_from_detections(self, det: Detections) -> Float[np.ndarray, "people 5"]:
        """ROIs for the keypoint model from detections."""
        kc = self.kcard
        if det.num_people == 0:
            return np.zeros((0, 5))
        blaze_det = det.keypoints.shape[1] > 0
        if kc.kind == "blazepose_landmark":
            if blaze_det:
                return det.rois  # MediaPipe's own detection -> ROI alignment
            # A person box: square ROI on the box centre, long side x roi_scale, upright.
            side = np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1]) * kc.roi_scale
            return np.stack([det.rois[:, 0], det.rois[:, 1], side, side, np.zeros_like(side)], 1)
        aspect = kc.input_size[0] / kc.input_size[1]
        if blaze_det:
            # BlazePose encodes the body as a circle (mid-hip centre, radius |kp1 - kp0|): use its bounding square.
            r = det.rois[:, 2] / (2.0 * self.dcard.roi_scale)
            boxes = np.stack([det.rois[:, 0] - r, det.rois[:, 1] - r, det.rois[:, 0] + r, det.rois[:, 1] + r], 1)
        else:
            boxes = det.boxes
        return box_to_roi(boxes, aspect, kc.padding)

    def rois_from_boxes(self, boxes: Float[np.ndarray, "people 4"]) -> Float[np.ndarray, "people 5"]:
        """ROIs for the keypoint model from person boxes (xyxy px)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        det = Detections(boxes=boxes, scores=np.ones(len(boxes)), keypoints=np.zeros((len(boxes), 0, 2)),
                         rois=np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                                        boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                                        np.zeros(len(boxes))], 1))
        return self.rois_from_detections(det)

    def rois_from_keypoints(self, kpts: Float[np.ndarray, "people 17 3"], *, min_conf: float = 0.3):
        """ROIs from COCO-17 keypoints (a projected 3D estimate, or the previous frame): BlazePose-style rotated ROI
        for the landmark model, an upright box around the valid keypoints otherwise. NaN rows where a person has
        fewer than 2 valid keypoints."""
        kpts = np.asarray(kpts, np.float64).reshape(-1, 17, 3)
        if self.kcard.kind == "blazepose_landmark":
            return roi_from_coco17(kpts, min_conf=min_conf, scale=self.kcard.roi_scale,
                                   target_angle_deg=self.kcard.roi_target_angle_deg)
        v = (kpts[..., 2] > min_conf)[..., None]
        with np.errstate(invalid="ignore"):
            lo = np.where(v, kpts[..., :2], np.inf).min(1)
            hi = np.where(v, kpts[..., :2], -np.inf).max(1)
        boxes = np.concatenate([lo, hi], 1)
        rois = self.rois_from_boxes(np.nan_to_num(boxes, posinf=0.0, neginf=0.0))
        return np.where((v[..., 0].sum(1) >= 2)[:, None], rois, np.nan)

    def keypoints(self, image: UInt8[np.ndarray, "H W 3"], rois: Float[np.ndarray, "people 5"],
                  scores: np.ndarray | None = None) -> FrameKeypoints:
        """Run the keypoint model on given ROIs (NaN rows -> all-missing people, order preserved)."""
        rois = np.asarray(rois, np.float64).reshape(-1, 5)
        p = rois.shape[0]
        ok = np.isfinite(rois).all(1) & (rois[:, 2] > 1) & (rois[:, 3] > 1)
        k = self.kcard.num_keypoints
        full = np.zeros((p, k, 3))
        person = np.zeros(p)
        if ok.any():
            if self.kcard.kind == "blazepose_landmark":
                lm = self.keypoint_model(image, rois[ok])
                conf = lm.landmarks[..., 3] * lm.pose_score[:, None]
                full[ok] = np.concatenate([lm.landmarks[..., :2], conf[..., None]], -1)
                person[ok] = lm.pose_score
            else:
                full[ok] = self.keypoint_model(image, rois[ok])
                person[ok] = full[ok][..., 2].mean(-1)
        if scores is not None:
            person = np.asarray(scores, np.float64)
        coco = full[:, list(self.kcard.coco17_indices)]
        return FrameKeypoints(coco17=coco, full=full, rois=rois, scores=person)

    def detect_frame(self, image: UInt8[np.ndarray, "H W 3"], rois: Float[np.ndarray, "people 5"] | None = None
                     ) -> Float[np.ndarray, "people 17 3"]:
        """COCO-17 keypoints (x px, y px, confidence) of the people in one RGB uint8 image.

        rois=None: run the detector (people sorted by detector score). Otherwise one row per ROI, in order.
        """
        return self.run(image, rois).coco17

    def run(self, image: UInt8[np.ndarray, "H W 3"], rois: Float[np.ndarray, "people 5"] | None = None
            ) -> FrameKeypoints:
        """Like detect_frame, returning everything (full keypoint set, ROIs, person scores)."""
        if rois is None:
            det = self.detect(image)
            return self.keypoints(image, self.rois_from_detections(det), scores=det.scores)
        return self.keypoints(image, rois)


__all__ = ["FrameKeypoints", "PoseFrontEnd", "make_detector", "make_keypoint_model", "roi_from_alignment_points"]
