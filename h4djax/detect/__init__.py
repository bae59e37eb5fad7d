"""ONNX 2D front end (numpy + onnxruntime + OpenCV; no JAX): person detectors and keypoint models described by
model cards, synchronized multi-camera readers.

Public API:
- `PoseFrontEnd` (`from_files`, `from_config`, `detect_frame(image, rois=None) -> f[people, 17, 3]`, `run`,
  `keypoints(image, rois)`, `rois_from_keypoints`, `rois_from_boxes`, `detect`), `FrameKeypoints`;
- runners: `BlazePoseDetector`, `BlazePoseLandmarker`, `TopDownModel`, `BoxDetector`, `Detections`, `Landmarks`;
- decoding helpers: `decode_heatmaps`, `decode_simcc`, `ssd_anchors`, `weighted_nms`, `nms`, `roi_from_coco17`;
- crops: `warp_crop`, `letterbox`, `box_to_roi`, `fit_aspect`, `crop_to_image_affine`;
- model cards: `ModelCard`, `load_model_card`, `parse_overrides`, `make_card`;
- video: `MultiCameraReader`, `open_camera`; errors: `ModelCardError`, `VideoError`.
Whole captures (detection + identity across views and time, keypoints2d.npz cache) live in
`h4djax.detect.pipeline` (`detect_capture`, `ensure_keypoints`); it is not imported here because it pulls in
`h4djax.associate` and the JAX 2D filter.
Images are RGB uint8 [H, W, 3]; keypoints (x px, y px, confidence) with OpenCV's pixel-centre convention.
"""

from h4djax.detect.blazepose import (
    BlazePoseDetector, BlazePoseLandmarker, Detections, Landmarks, roi_from_coco17, ssd_anchors, weighted_nms,
)
from h4djax.detect.cards import COCO17_FROM, ModelCard, load_model_card, make_card, parse_overrides
from h4djax.detect.crop import box_to_roi, crop_to_image_affine, fit_aspect, letterbox, warp_crop
from h4djax.detect.detectors import BoxDetector, nms
from h4djax.detect.errors import ModelCardError, VideoError
from h4djax.detect.frontend import FrameKeypoints, PoseFrontEnd, make_detector, make_keypoint_model
from h4djax.detect.runtime import available_providers, make_session
from h4djax.detect.topdown import TopDownModel, decode_heatmaps, decode_simcc
from h4djax.detect.video import MultiCameraReader, open_camera

__all__ = [
    "BlazePoseDetector", "BlazePoseLandmarker", "BoxDetector", "COCO17_FROM", "Detections", "FrameKeypoints",
    "Landmarks", "ModelCard", "ModelCardError", "MultiCameraReader", "PoseFrontEnd", "TopDownModel", "VideoError",
    "available_providers", "box_to_roi", "crop_to_image_affine", "decode_heatmaps", "decode_simcc", "fit_aspect",
    "letterbox", "load_model_card", "make_card", "make_detector", "make_keypoint_model", "make_session", "nms",
    "open_camera", "parse_overrides", "roi_from_coco17", "ssd_anchors", "warp_crop", "weighted_nms",
]
