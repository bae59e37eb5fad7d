"""Regions of interest and the affine crops that feed 2D models (numpy + OpenCV, host side).

Coordinate convention: image keypoints are in pixels with the centre of pixel (col, row) at (col, row), as in
OpenCV and the COCO / OpenPose keypoint formats.

Crop convention (the one the models were trained and are run with upstream): a crop of `out_w` x `out_h` pixels of
an ROI with centre C, size (w, h) and rotation r maps crop coordinate p to the image point
`C + R(r) @ ((p - out / 2) * (w, h) / out)`; the model's output coordinates (BlazePose landmarks in crop pixels,
heatmap index x stride, SimCC index / split ratio) are such crop coordinates, with no half-pixel shifts.
MediaPipe's ImageToTensorCalculator (ROI corners onto crop coordinates 0 and out, fed to cv2.warpPerspective) and
mmpose's non-UDP TopdownAffine / codec decoding both use it. It sits half a crop pixel off the geometric centre of
the crop grid (the bias UDP, Huang et al. CVPR 2020, removes), but reproducing it is what makes a converted model
land where its upstream pipeline lands; a UDP-trained model would need its own convention.

A region of interest (ROI) is `f[5] = (cx, cy, width, height, rotation)`: centre in image pixels, size in pixels,
rotation in radians. The rotation follows MediaPipe's NormalizedRect: a crop offset (u, v) from the ROI centre maps
to the image offset (cos r * u - sin r * v, sin r * u + cos r * v), i.e. the ROI's up-axis is the image up-axis
turned clockwise on screen (y down) by r.
"""

from __future__ import annotations

import cv2
import numpy as np
from jaxtyping import Float, UInt8

ROI_FIELDS = ("cx", "cy", "width", "height", "rotation")


def crop_to_image_affine(roi: Float[np.ndarray, "5"], out_w: int, out_h: int) -> Float[np.ndarray, "2 3"]:
    """Affine A (2x3) from crop coordinates to image pixels: `image_xy = A[:, :2] @ crop_xy + A[:, 2]`.

    The crop covers the ROI (see the module docstring for the convention); a non-matching aspect ratio stretches
    the ROI, so callers fix the aspect beforehand (`fit_aspect`).
    """
    cx, cy, w, h, rot = (float(v) for v in roi)
    c, s = np.cos(rot), np.sin(rot)
    sx, sy = w / out_w, h / out_h  # image pixels per crop pixel along the ROI axes
    lin = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    t = np.array([cx, cy]) - lin @ np.array([out_w / 2.0, out_h / 2.0])
    return np.concatenate([lin, t[:, None]], axis=1)


def invert_affine(a: Float[np.ndarray, "2 3"]) -> Float[np.ndarray, "2 3"]:
    """Inverse of a 2x3 affine (cv2.invertAffineTransform, kept in float64)."""
    return cv2.invertAffineTransform(np.asarray(a, np.float64))


def apply_affine(a: Float[np.ndarray, "2 3"], xy: Float[np.ndarray, "... 2"]) -> Float[np.ndarray, "... 2"]:
    """Apply a 2x3 affine to points `xy[..., 2]`."""
    xy = np.asarray(xy, np.float64)
    return xy @ a[:, :2].T + a[:, 2]


_BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


def warp_crop(
    image: UInt8[np.ndarray, "H W C"],
    roi: Float[np.ndarray, "5"],
    out_w: int,
    out_h: int,
    *,
    border: str = "constant",
    border_value: float | tuple[float, ...] = 0.0,
) -> tuple[UInt8[np.ndarray, "out_h out_w C"], Float[np.ndarray, "2 3"]]:
    """Crop a rotated ROI into an `out_w` x `out_h` image with bilinear sampling (MediaPipe's CPU ImageToTensor
    uses cv2.warpPerspective with INTER_LINEAR the same way).

    Returns the crop (same dtype as `image`) and the crop -> image affine (centre convention) that maps model
    coordinates back to the image.
    """
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    crop2img = crop_to_image_affine(roi, out_w, out_h)
    img2crop = invert_affine(crop2img)
    if np.isscalar(border_value):
        border_value = (float(border_value),) * 4
    crop = cv2.warpAffine(
        image, img2crop, (int(out_w), int(out_h)), flags=cv2.INTER_LINEAR,
        borderMode=_BORDERS[border], borderValue=tuple(border_value),
    )
    if crop.ndim == 2:
        crop = crop[:, :, None]
    return crop, crop2img


def fit_aspect(rois: Float[np.ndarray, "n 5"], aspect: float) -> Float[np.ndarray, "n 5"]:
    """Enlarge the shorter side of each ROI so that width / height == `aspect` (mmpose's _fix_aspect_ratio,
    MediaPipe's keep_aspect_ratio letterboxing)."""
    rois = np.array(rois, np.float64, copy=True).reshape(-1, 5)
    w, h = rois[:, 2], rois[:, 3]
    wider = w > aspect * h
    rois[:, 2] = np.where(wider, w, h * aspect)
    rois[:, 3] = np.where(wider, w / aspect, h)
    return rois


def letterbox(
    image: UInt8[np.ndarray, "H W C"],
    out_w: int,
    out_h: int,
    *,
    align: str = "center",
    pad_value: float = 0.0,
) -> tuple[UInt8[np.ndarray, "out_h out_w C"], Float[np.ndarray, "2 3"]]:
    """Fit a whole image into `out_w` x `out_h` keeping its aspect ratio, padding with `pad_value`.

    `align="center"`: MediaPipe's keep_aspect_ratio on the full-image ROI (centre (W/2, H/2), bilinear warp,
    padding on both sides). `"top_left"`: mmdet / rtmlib (cv2.resize INTER_LINEAR to int(size x ratio), pasted at
    the top-left corner; boxes map back by dividing by the ratio).
    Returns the padded image and the crop -> image affine.
    """
    h, w = image.shape[:2]
    if align == "center":
        roi = fit_aspect(np.array([[w / 2.0, h / 2.0, w, h, 0.0]]), out_w / out_h)[0]
        return warp_crop(image, roi, out_w, out_h, border="constant", border_value=pad_value)
    if align != "top_left":
        raise ValueError(f"align must be 'center' or 'top_left', got {align!r}")
    ratio = min(out_w / w, out_h / h)
    nw, nh = max(1, int(w * ratio)), max(1, int(h * ratio))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    out = np.full((out_h, out_w, resized.shape[2]), pad_value, dtype=image.dtype)
    out[:nh, :nw] = resized
    crop2img = np.array([[1.0 / ratio, 0.0, 0.0], [0.0, 1.0 / ratio, 0.0]])
    return out, crop2img


def box_to_roi(
    boxes: Float[np.ndarray, "people 4"],
    aspect: float,
    padding: float = 1.25,
) -> Float[np.ndarray, "people 5"]:
    """Axis-aligned ROIs for top-down models from `xyxy` boxes (pixels).

    mmpose's TopdownAffine: centre of the box, enlarge the shorter side to the model's aspect ratio
    (`aspect` = input width / height), then scale both sides by `padding` (1.25 in the mmpose/rtmlib configs).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    rois = fit_aspect(np.stack([cx, cy, w, h, np.zeros_like(cx)], axis=1), aspect)
    rois[:, 2:4] *= padding
    return rois
