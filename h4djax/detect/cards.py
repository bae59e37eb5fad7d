"""Model cards: how to feed an ONNX 2D model and read its outputs, stored as a `.toml` beside the `.onnx`.

A card is a flat TOML table whose keys are the fields of `ModelCard` (unknown keys are errors naming the key).
Every field can be overridden from the command line as `key=value` strings (TOML values: `input_size=[288,384]`,
`refine="dark"`), so a user's RTMPose / HRNet / ViTPose / YOLOX / RTMDet export runs without writing Python.

Example (an RTMPose-m export from rtmlib, `rtmpose-m.toml` beside `rtmpose-m.onnx`):

    kind = "topdown_simcc"
    input_size = [192, 256]        # width, height
    color = "rgb"
    mean = [123.675, 116.28, 103.53]
    std = [58.395, 57.12, 57.375]
    keypoints = "coco17"
    simcc_split_ratio = 2.0
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h4djax.detect.errors import ModelCardError

KINDS = ("blazepose_detector", "blazepose_landmark", "topdown_heatmap", "topdown_simcc", "yolox", "rtmdet")
DETECTOR_KINDS = ("blazepose_detector", "yolox", "rtmdet")
KEYPOINT_KINDS = ("blazepose_landmark", "topdown_heatmap", "topdown_simcc")

# COCO-17 order: nose, l/r eye, l/r ear, l/r shoulder, l/r elbow, l/r wrist, l/r hip, l/r knee, l/r ankle.
# Index of each COCO-17 keypoint in a model's own keypoint list.
COCO17_FROM = {
    "coco17": tuple(range(17)),
    # COCO-WholeBody-133 and Halpe-26 start with the 17 COCO body keypoints in COCO order.
    "coco_wholebody133": tuple(range(17)),
    "halpe26": tuple(range(17)),
    # BlazePose-33 (MediaPipe pose_landmark_topology): nose 0, eyes 2/5 (centre points), ears 7/8, shoulders 11/12,
    # elbows 13/14, wrists 15/16, hips 23/24, knees 25/26, ankles 27/28.
    "blazepose33": (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28),
}
NUM_KEYPOINTS = {"coco17": 17, "coco_wholebody133": 133, "halpe26": 26, "blazepose33": 33}


@dataclass(frozen=True)
class ModelCard:
    """How to run one ONNX 2D model. Sizes are (width, height) in pixels; normalization is
    `(pixel - mean) / std` per channel in the model's colour order (`color`), pixels in [0, 255]."""

    kind: str
    """One of KINDS."""
    path: str = ""
    """The `.onnx` file (set by `load_model_card`; relative paths in a card are relative to the card)."""
    card_path: str = ""
    """The `.toml` the card came from ("" if built in code)."""
    name: str = ""
    input_size: tuple[int, int] = (256, 256)
    layout: str = "nhwc"
    """"nhwc" (TFLite-derived models) or "nchw" (PyTorch exports)."""
    color: str = "rgb"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    input_dtype: str = "float32"
    keypoints: str = "coco17"
    """Keypoint set of a keypoint model: coco17, coco_wholebody133, halpe26, blazepose33."""
    coco17: tuple[int, ...] = ()
    """Index of each COCO-17 keypoint in the model's list; empty = the default for `keypoints`."""
    # --- cropping (keypoint models) ---
    padding: float = 1.25
    """ROI enlargement around a person box (mmpose / rtmlib top-down: 1.25)."""
    border: str = "constant"
    """Outside-image fill of the crop: "constant" (`border_value`) or "replicate" (MediaPipe's default)."""
    border_value: float = 0.0
    # --- decoding ---
    refine: str = "dark"
    """Heatmap sub-pixel refinement: "none", "quarter" (classic quarter offset) or "dark" (Zhang et al. 2020)."""
    dark_kernel: int = 11
    """Gaussian blur size of DARK (mmpose uses 11 for 64x48 heatmaps, 17 for 96x72)."""
    simcc_split_ratio: float = 2.0
    """SimCC bins per input pixel (RTMPose: 2.0)."""
    heatmap_refine: bool = True
    """BlazePose landmark: refine x/y with the model's 64x64 heatmap output (MediaPipe
    RefineLandmarksFromHeatmapCalculator, kernel 7)."""
    heatmap_kernel: int = 7
    heatmap_min_conf: float = 0.5
    # --- detectors ---
    score_threshold: float = 0.5
    nms_iou: float = 0.3
    max_people: int = 10
    letterbox: str = "center"
    """Detector letterbox alignment: "center" (MediaPipe) or "top_left" (YOLOX / RTMDet via mmdet, rtmlib)."""
    pad_value: float = 0.0
    """Letterbox fill in pixel units (0 for MediaPipe, 114 for YOLOX / RTMDet)."""
    output_format: str = "end2end"
    """YOLOX / RTMDet: "end2end" (outputs dets [1,N,5] x1,y1,x2,y2,score + labels [1,N], NMS in the graph, as
    mmdeploy / rtmlib export them) or "raw" (YOLOX head output [1, anchors, 5 + classes] before decoding)."""
    strides: tuple[int, ...] = (8, 16, 32)
    """YOLOX raw: feature strides (anchor-free grid). BlazePose detector: SSD layer strides."""
    person_class: int = 0
    # --- BlazePose detector (MediaPipe pose_detection_cpu.pbtxt) ---
    anchors_per_cell: tuple[int, ...] = (2, 2, 2, 2, 2)
    """Per SSD layer: anchors per cell (aspect ratio 1 + interpolated scale, fixed size)."""
    score_clip: float = 100.0
    roi_keypoints: tuple[int, int] = (0, 1)
    """Detection keypoints giving the ROI centre and its size/rotation point (0 = mid hip, 1 = full body)."""
    roi_scale: float = 1.25
    roi_target_angle_deg: float = 90.0
    # --- provenance ---
    source: str = ""
    license: str = ""
    sha256: str = ""

    @property
    def coco17_indices(self) -> tuple[int, ...]:
        return self.coco17 if self.coco17 else COCO17_FROM[self.keypoints]

    @property
    def num_keypoints(self) -> int:
        return NUM_KEYPOINTS[self.keypoints]


_FIELDS = {f.name: f for f in dataclasses.fields(ModelCard)}
_CHOICES = {
    "kind": KINDS,
    "layout": ("nhwc", "nchw"),
    "color": ("rgb", "bgr"),
    "input_dtype": ("float32", "uint8"),
    "keypoints": tuple(NUM_KEYPOINTS),
    "border": ("constant", "replicate"),
    "refine": ("none", "quarter", "dark"),
    "letterbox": ("center", "top_left"),
    "output_format": ("end2end", "raw"),
}


def _coerce(file: str, key: str, value: Any) -> Any:
    """Check/convert one card value against the dataclass field type; errors name the file and key."""
    if key not in _FIELDS:
        raise ModelCardError(file, key, f"unknown key (known: {', '.join(sorted(_FIELDS))})")
    default = _FIELDS[key].default
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError("expected true/false")
            out: Any = value
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise TypeError("expected an array")
            elem = int if key in ("input_size", "coco17", "strides", "anchors_per_cell", "roi_keypoints") else float
            out = tuple(elem(v) for v in value)
            if key in ("input_size", "mean", "std", "roi_keypoints") and len(out) != len(default):
                raise TypeError(f"expected {len(default)} values, got {len(out)}")
            if key == "input_size" and min(out) <= 0:
                raise TypeError("sizes must be positive")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError("expected an integer")
            out = int(value)
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError("expected a number")
            out = float(value)
        else:
            if not isinstance(value, str):
                raise TypeError("expected a string")
            out = value
    except (TypeError, ValueError) as e:
        raise ModelCardError(file, key, f"bad value {value!r}: {e}") from None
    if key in _CHOICES and out not in _CHOICES[key]:
        raise ModelCardError(file, key, f"{out!r} is not one of {', '.join(_CHOICES[key])}")
    return out


def parse_overrides(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """`["key=value", ...]` (TOML values, bare words taken as strings) -> dict, for command-line overrides."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ModelCardError("<command line>", None, f"override {item!r} is not of the form key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word such as refine=dark
        out[key] = value
    return out


def make_card(values: dict[str, Any], *, file: str = "<card>") -> ModelCard:
    """Validate a dict of card values (as read from TOML) into a ModelCard."""
    if "kind" not in values:
        raise ModelCardError(file, "kind", f"missing (one of {', '.join(KINDS)})")
    clean = {k: _coerce(file, k, v) for k, v in values.items()}
    card = ModelCard(**clean)
    if card.coco17:
        n = card.num_keypoints
        if len(card.coco17) != 17 or not all(0 <= i < n for i in card.coco17):
            raise ModelCardError(file, "coco17", f"needs 17 indices in [0, {n}) for keypoints={card.keypoints!r}")
    return card


def card_path_for(onnx_path: str | Path) -> Path:
    return Path(onnx_path).with_suffix(".toml")


def load_model_card(
    onnx_path: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    card_path: str | Path | None = None,
) -> ModelCard:
    """Read the card of `onnx_path` (the `.toml` beside it unless `card_path` is given) and apply `overrides`.

    Without a card file, `overrides` must at least give `kind`. Raises ModelCardError naming the file and field.
    """
    onnx_path = Path(onnx_path)
    values: dict[str, Any] = {}
    cpath = Path(card_path) if card_path is not None else card_path_for(onnx_path)
    if cpath.is_file():
        try:
            values = tomllib.loads(cpath.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ModelCardError(str(cpath), None, f"not valid TOML: {e}") from None
        file = str(cpath)
    elif card_path is not None:
        raise ModelCardError(str(cpath), None, "model card not found")
    else:
        file = f"{onnx_path} (no model card {cpath.name}; fields from overrides)"
    for k in values:  # validate file keys with the file's name before overrides mix in
        if k not in _FIELDS:
            _coerce(str(cpath), k, values[k])
    values.update(overrides or {})
    values.pop("path", None)
    values.pop("card_path", None)
    card = make_card(values, file=file)
    return dataclasses.replace(card, path=str(onnx_path), card_path=str(cpath) if cpath.is_file() else "")
