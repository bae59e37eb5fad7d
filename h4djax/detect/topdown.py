"""Generic top-down keypoint models on onnxruntime: heatmap heads (HRNet, ViTPose, ...) and SimCC heads (RTMPose),
as exported by mmpose / rtmlib.

Pipeline (mmpose TopdownAffine + codecs, non-UDP): ROI of the person (box centre, aspect fixed to the model input,
x1.25 padding) -> affine crop to the input size -> normalization -> model -> decoding in crop coordinates ->
inverse affine to image pixels. Crop coordinates follow `h4djax.detect.crop` (mmpose's convention): heatmap cell
(i, j) is crop point (i, j) x input / heatmap size, SimCC bin b is crop coordinate b / split_ratio.
"""

from __future__ import annotations

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from h4djax.detect.cards import ModelCard
from h4djax.detect.crop import fit_aspect, warp_crop
from h4djax.detect.runtime import OnnxModel


def heatmap_argmax(heatmaps: Float[np.ndarray, "n k h w"]) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak (x, y) per heatmap and its value (mmpose get_heatmap_maximum; peaks <= 0 give (-1, -1))."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(-1)
    val = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    xy = np.stack([idx % w, idx // w], axis=-1).astype(np.float64)
    xy[val <= 0] = -1.0
    return xy, val.astype(np.float64)


def _gather(hm: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """hm[n, k, y, x] for integer index arrays of shape [n, k] (clipped to the map)."""
    n, k, h, w = hm.shape
    xi = np.clip(x, 0, w - 1)
    yi = np.clip(y, 0, h - 1)
    return hm[np.arange(n)[:, None], np.arange(k)[None, :], yi, xi]


def refine_quarter(heatmaps: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Classic quarter offset (Newell et al. 2016; mmpose refine_keypoints): move 0.25 cell towards the larger
    neighbour along x and y, where both neighbours exist."""
    n, k, h, w = heatmaps.shape
    x = xy[..., 0].astype(np.int64)
    y = xy[..., 1].astype(np.int64)
    dx = _gather(heatmaps, x + 1, y) - _gather(heatmaps, x - 1, y)
    dy = _gather(heatmaps, x, y + 1) - _gather(heatmaps, x, y - 1)
    okx = (x >= 1) & (x <= w - 2) & (y >= 0) & (y < h)
    oky = (y >= 1) & (y <= h - 2) & (x >= 0) & (x < w)
    off = np.stack([np.where(okx, np.sign(dx), 0.0), np.where(oky, np.sign(dy), 0.0)], axis=-1) * 0.25
    return np.where((xy >= 0).all(-1, keepdims=True), xy + off, xy)


def refine_dark(heatmaps: np.ndarray, xy: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK sub-pixel refinement (Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose
    Estimation", CVPR 2020): blur each heatmap (Gaussian, `kernel`, keeping its maximum), take the log, and move
    the integer peak by one Newton step -H^-1 g of the log-heatmap's second-order Taylor expansion (central
    differences, step 2 for the second derivatives as in mmpose). A singular Hessian or a peak within 2 cells of
    the border leaves the point as it is; the step is clipped to one cell.
    """
    n, k, h, w = heatmaps.shape
    hm = heatmaps.astype(np.float64).reshape(n * k, h, w)
    peak = hm.reshape(n * k, -1).max(-1)
    blurred = np.stack([cv2.GaussianBlur(m, (kernel, kernel), 0) for m in hm])
    bmax = blurred.reshape(n * k, -1).max(-1)
    # Rescale so the blurred peak keeps the original maximum (mmpose gaussian_blur); NaN-safe for flat maps.
    blurred *= (np.where(bmax > 0, peak / np.where(bmax > 0, bmax, 1.0), 1.0))[:, None, None]
    lg = np.log(np.clip(blurred, 1e-3, 50.0)).reshape(n, k, h, w)
    x = xy[..., 0].astype(np.int64)
    y = xy[..., 1].astype(np.int64)
    g = lambda dx, dy: _gather(lg, x + dx, y + dy)  # noqa: E731
    dx = 0.5 * (g(1, 0) - g(-1, 0))
    dy = 0.5 * (g(0, 1) - g(0, -1))
    dxx = 0.25 * (g(2, 0) - 2 * g(0, 0) + g(-2, 0))
    dyy = 0.25 * (g(0, 2) - 2 * g(0, 0) + g(0, -2))
    dxy = 0.25 * (g(1, 1) - g(1, -1) - g(-1, 1) + g(-1, -1))
    det = dxx * dyy - dxy ** 2
    ok = (np.abs(det) > 1e-12) & (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
    det_safe = np.where(ok, det, 1.0)
    # -H^-1 g with H = [[dxx, dxy], [dxy, dyy]].
    ox = -(dyy * dx - dxy * dy) / det_safe
    oy = -(-dxy * dx + dxx * dy) / det_safe
    off = np.clip(np.stack([np.where(ok, ox, 0.0), np.where(ok, oy, 0.0)], -1), -1.0, 1.0)
    return np.where((xy >= 0).all(-1, keepdims=True), xy + off, xy)


def decode_heatmaps(
    heatmaps: Float[np.ndarray, "n k h w"], refine: str = "dark", dark_kernel: int = 11
) -> tuple[Float[np.ndarray, "n k 2"], Float[np.ndarray, "n k"]]:
    """Peak location (heatmap cells, x right / y down) and peak value of each heatmap."""
    heatmaps = np.asarray(heatmaps, np.float64)
    xy, val = heatmap_argmax(heatmaps)
    if refine == "quarter":
        xy = refine_quarter(heatmaps, xy)
    elif refine == "dark":
        xy = refine_dark(heatmaps, xy, dark_kernel)
    elif refine != "none":
        raise ValueError(f"refine must be none, quarter or dark, got {refine!r}")
    return xy, val


def decode_simcc(
    simcc_x: Float[np.ndarray, "n k wx"], simcc_y: Float[np.ndarray, "n k hy"], split_ratio: float
) -> tuple[Float[np.ndarray, "n k 2"], Float[np.ndarray, "n k"]]:
    """SimCC decoding (Li et al., ECCV 2022; RTMPose): argmax of the x and y vectors / split ratio; the score is the
    smaller of the two maxima (mmpose get_simcc_maximum); non-positive scores give (-1, -1)."""
    sx = np.asarray(simcc_x, np.float64)
    sy = np.asarray(simcc_y, np.float64)
    ix, iy = sx.argmax(-1), sy.argmax(-1)
    vx = np.take_along_axis(sx, ix[..., None], -1)[..., 0]
    vy = np.take_along_axis(sy, iy[..., None], -1)[..., 0]
    val = np.minimum(vx, vy)
    xy = np.stack([ix, iy], -1).astype(np.float64) / split_ratio
    xy[val <= 0] = -1.0
    return xy, val


class TopDownModel:
    """A top-down keypoint model (card kind `topdown_heatmap` or `topdown_simcc`) run on person ROIs."""

    def __init__(self, card: ModelCard, *, threads: int = 2, device: str = "auto"):
        if card.kind not in ("topdown_heatmap", "topdown_simcc"):
            raise ValueError(f"card kind {card.kind!r} is not a top-down keypoint model")
        self.card = card
        self.model = OnnxModel(card, threads=threads, device=device)

    def crops(self, image: UInt8[np.ndarray, "H W 3"], rois: Float[np.ndarray, "people 5"]):
        """Crops [people, h, w, 3] of the ROIs (aspect fixed to the model's) and crop -> image affines."""
        w, h = self.card.input_size
        rois = fit_aspect(rois, w / h)
        out = [warp_crop(image, r, w, h, border=self.card.border, border_value=self.card.border_value)
               for r in rois]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def decode(self, outputs: list[np.ndarray], affs: np.ndarray) -> Float[np.ndarray, "people k 3"]:
        """Model outputs for `people` crops -> keypoints (x px, y px, score) in the image."""
        c = self.card
        w, h = c.input_size
        if c.kind == "topdown_heatmap":
            hm = outputs[0]
            if c.layout == "nhwc" and hm.shape[-1] == c.num_keypoints:
                hm = hm.transpose(0, 3, 1, 2)
            xy, val = decode_heatmaps(hm, c.refine, c.dark_kernel)
            crop_xy = xy * np.array([w / hm.shape[3], h / hm.shape[2]])
        else:
            sx, sy = outputs[0], outputs[1]
            # rtmlib / mmdeploy order is (simcc_x, simcc_y); trust the bin counts when they tell them apart.
            if sx.shape[-1] == round(h * c.simcc_split_ratio) != round(w * c.simcc_split_ratio):
                sx, sy = sy, sx
            crop_xy, val = decode_simcc(sx, sy, c.simcc_split_ratio)
        img_xy = np.einsum("pij,pkj->pki", affs[:, :, :2], crop_xy) + affs[:, None, :, 2]
        # FORMATS.md: confidence 0 = missing (finite coordinates, no NaN in keypoint arrays).
        missing = (val <= 0) | ~np.isfinite(img_xy).all(-1)
        img_xy = np.where(missing[..., None], 0.0, img_xy)
        return np.concatenate([img_xy, np.where(missing, 0.0, val)[..., None]], axis=-1)

    def __call__(self, image: UInt8[np.ndarray, "H W 3"], rois: Float[np.ndarray, "people 5"]):
        """Keypoints f[people, k, 3] (model's keypoint set) for each ROI of one RGB uint8 image."""
        rois = np.asarray(rois, np.float64).reshape(-1, 5)
        if rois.shape[0] == 0:
            return np.zeros((0, self.card.num_keypoints, 3))
        crops, affs = self.crops(image, rois)
        outs = self.model.run(self.model.preprocess(crops))
        return self.decode(outs, affs)
