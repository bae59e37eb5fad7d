"""A 2D detector error model: turns exact projections of the ground truth into keypoints that fail the way real
top-down detectors (HRNet, ViTPose, RTMPose) fail on close interaction footage.

Effects, applied in this order (each one overrides the earlier ones for the keypoints it touches; `labels` records
the last effect per keypoint, see `NOISE_LABELS`):

1. pixel noise ~ N(0, sigma^2) per axis with sigma = pixel_sigma x person size (px, longer side of the tight box)
   x a per-keypoint factor (COCO OKS sigmas: face points tight, hips loose), AR(1)-correlated over frames;
   confidence = conf_base - conf_error_slope x |error / sigma| + noise, so confidence correlates with error;
2. occlusion (from `h4djax.synth.visibility`): noise x occluded_sigma_scale, confidence x occluded_conf_scale;
   a keypoint hidden by ANOTHER person jumps onto the nearest keypoint of that person with occluded_jump_prob;
3. contact pick-up: a keypoint within contact_pickup_radius x person size (image) of the same keypoint of another
   person whose box overlaps takes that keypoint's position with probability contact_swap_prob (top-down detectors
   on overlapping boxes mix up limbs that touch); keypoints away from the partner are never picked up;
4. left/right swaps per pair (swap_prob) and whole-body flips (flip_prob), confidences kept;
5. gross outliers (outlier_prob): uniform in the person's box grown by 50%, confidence in outlier_conf;
6. missed detections: runs of miss_duration frames starting with probability miss_prob per person-view-frame, and
   single dropped keypoints (miss_kpt_prob): confidence 0;
7. truncation: keypoints outside the image or behind the camera, and people mostly behind the camera: confidence 0.

Missing keypoints (confidence 0) are written as (0, 0, 0). Host-side numpy, vectorized over all axes; randomness
only from the `numpy.random.Generator` passed in (same seed, same keypoints).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from h4djax.errors import ConfigError
from h4djax.synth.config import NoiseConfig

__all__ = ["NOISE_LABELS", "COCO_LR_PAIRS", "apply_detector_noise"]

#: Meaning of the per-keypoint `labels` returned by `apply_detector_noise`.
NOISE_LABELS: dict[int, str] = {
    0: "visible", 1: "occluded", 2: "jumped_to_occluder", 3: "contact_pickup", 4: "left_right_swap",
    5: "outlier", 6: "missed", 7: "truncated",
}

#: COCO-17 left/right keypoint pairs (eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_LR_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[..., 0], b[..., 0])
    y1 = np.maximum(a[..., 1], b[..., 1])
    x2 = np.minimum(a[..., 2], b[..., 2])
    y2 = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _ar1(n: np.ndarray, rho: float) -> np.ndarray:
    """Unit-variance AR(1) process along axis 0 driven by white noise `n` (stationary from the first frame)."""
    if rho <= 0.0:
        return n
    if rho >= 1.0:
        raise ConfigError(f"noise.temporal_corr must be < 1, got {rho}")
    g = np.sqrt(1.0 - rho * rho)
    zi = (n[0] * (1.0 - g))[None]  # so that e[0] = n[0]
    e, _ = lfilter([g], [1.0, -rho], n, axis=0, zi=zi)
    return e


def apply_detector_noise(
    uv: np.ndarray,
    in_front: np.ndarray,
    image_size: np.ndarray,
    box: np.ndarray,
    person_in_front: np.ndarray,
    occluder: np.ndarray,
    cfg: NoiseConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy detections from exact projections.

    Args:
        uv: f[frames, cams, people, kpts, 2] exact projections of the ground-truth keypoints (px), COCO-17 order.
        in_front: b[frames, cams, people, kpts] keypoint in front of the camera.
        image_size: i[cams, 2] width, height.
        box: f[frames, cams, people, 4] tight boxes of the projected meshes (px).
        person_in_front: b[frames, cams, people].
        occluder: i[frames, cams, people, kpts] person hiding the keypoint (-1 visible; itself = self-occlusion).
        cfg: noise settings; rng: the random generator (consumed in a fixed order).

    Returns:
        keypoints f32[frames, cams, people, kpts, 3] (x, y, confidence) and labels i8[frames, cams, people, kpts]
        (`NOISE_LABELS`).
    """
    uv = np.asarray(uv, np.float64)
    F, C, P, K, _ = uv.shape
    W = np.asarray(image_size)[None, :, None, None, 0]
    H = np.asarray(image_size)[None, :, None, None, 1]
    in_image = in_front & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    in_image &= np.asarray(person_in_front)[..., None]
    if not cfg.enabled:
        kp = np.concatenate([uv, in_image[..., None].astype(np.float64)], -1)
        kp = np.where(in_image[..., None], kp, 0.0)
        return kp.astype(np.float32), np.where(in_image, 0, 7).astype(np.int8)
    if len(cfg.joint_sigma_scale) != K:
        raise ConfigError(f"noise.joint_sigma_scale has {len(cfg.joint_sigma_scale)} values for {K} keypoints")

    labels = np.zeros((F, C, P, K), np.int8)
    size = np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])  # [F, C, P]
    size = np.maximum(size, 1.0)
    sigma = cfg.pixel_sigma * size[..., None] * np.asarray(cfg.joint_sigma_scale)  # [F, C, P, K]
    occluded = occluder >= 0
    labels[occluded] = 1
    scale = np.where(occluded, cfg.occluded_sigma_scale, 1.0)

    # 1-2. Pixel noise (AR(1) over frames), confidence from the normalized error.
    e = _ar1(rng.standard_normal((F, C, P, K, 2)), cfg.temporal_corr)
    out = uv + (sigma * scale)[..., None] * e
    err_norm = np.linalg.norm(e, axis=-1) * scale  # error / nominal sigma
    conf = cfg.conf_base - cfg.conf_error_slope * err_norm + cfg.conf_noise * rng.standard_normal((F, C, P, K))
    conf = np.where(occluded, conf * cfg.occluded_conf_scale, conf)

    # Occluded by another person: jump onto the nearest (in the image) keypoint of the occluder.
    other_occ = occluded & (occluder != np.arange(P)[None, None, :, None])
    occ_idx = np.clip(occluder, 0, P - 1)
    f_i, c_i = np.arange(F)[:, None, None, None], np.arange(C)[None, :, None, None]
    occ_uv = uv[f_i, c_i, occ_idx]  # [F, C, P, K(kpt), K(occluder kpts), 2]
    nearest = np.argmin(np.linalg.norm(occ_uv - uv[..., None, :], axis=-1), axis=-1)  # [F, C, P, K]
    target = np.take_along_axis(occ_uv, nearest[..., None, None], axis=-2)[..., 0, :]
    jump = other_occ & (rng.random((F, C, P, K)) < cfg.occluded_jump_prob)
    tsig = cfg.pixel_sigma * size[f_i, c_i, occ_idx]
    out = np.where(jump[..., None], target + tsig[..., None] * rng.standard_normal((F, C, P, K, 2)), out)
    conf = np.where(jump, rng.uniform(0.4, 0.75, (F, C, P, K)), conf)
    labels[jump] = 2

    # 3. Contact pick-up: a keypoint lying near the SAME keypoint of the other person in the image (within
    # contact_pickup_radius x its person size, boxes overlapping) takes that person's keypoint with probability
    # contact_swap_prob. Only keypoints actually close to the partner are eligible, so the overall rate is
    # contact_swap_prob x (share of keypoints in contact), not a share of every keypoint of overlapping boxes.
    if P > 1:
        iou = _iou(box[:, :, :, None, :], box[:, :, None, :, :])  # [F, C, P, P]
        iou[:, :, np.arange(P), np.arange(P)] = -1.0
        # Image distance of each keypoint to the same keypoint of every other person; the nearest one is picked.
        dist = np.linalg.norm(uv[:, :, :, None] - uv[:, :, None, :], axis=-1)  # [F, C, P, P, K]
        dist = np.where((iou > 0.0)[..., None], dist, np.inf)
        other = np.argmin(dist, 3)  # [F, C, P, K]
        near = np.take_along_axis(dist, other[:, :, :, None], 3)[:, :, :, 0]
        eligible = near < cfg.contact_pickup_radius * size[..., None]
        pick = eligible & (rng.random((F, C, P, K)) < cfg.contact_swap_prob)
        k_i = np.arange(K)[None, None, None, :]
        other_out = out[f_i, c_i, other, k_i]
        other_conf = conf[f_i, c_i, other, k_i]
        out = np.where(pick[..., None], other_out, out)
        conf = np.where(pick, np.maximum(other_conf, 0.5), conf)
        labels[pick] = 3
    else:
        rng.random((F, C, P, K))  # keep the random stream aligned across people counts

    # 4. Left/right swaps per pair, and whole-body flips.
    li = np.array([a for a, _ in COCO_LR_PAIRS])
    ri = np.array([b for _, b in COCO_LR_PAIRS])
    flip = rng.random((F, C, P)) < cfg.flip_prob
    pair_swap = (rng.random((F, C, P, len(li))) < cfg.swap_prob) | flip[..., None]
    perm = np.broadcast_to(np.arange(K), (F, C, P, K)).copy()
    pl, pr = perm[..., li], perm[..., ri]
    perm[..., li] = np.where(pair_swap, pr, pl)
    perm[..., ri] = np.where(pair_swap, pl, pr)
    out = np.take_along_axis(out, perm[..., None], -2)
    conf = np.take_along_axis(conf, perm, -1)
    lab_sw = np.take_along_axis(labels, perm, -1)
    swapped = perm != np.arange(K)
    labels = np.where(swapped, 4, lab_sw).astype(np.int8)

    # 5. Gross outliers inside the person's box grown by 50%.
    outl = rng.random((F, C, P, K)) < cfg.outlier_prob
    cx = 0.5 * (box[..., 0] + box[..., 2])
    cy = 0.5 * (box[..., 1] + box[..., 3])
    hw = 0.75 * (box[..., 2] - box[..., 0])
    hh = 0.75 * (box[..., 3] - box[..., 1])
    r = rng.uniform(-1.0, 1.0, (F, C, P, K, 2))
    rand_uv = np.stack([cx[..., None] + hw[..., None] * r[..., 0], cy[..., None] + hh[..., None] * r[..., 1]], -1)
    out = np.where(outl[..., None], rand_uv, out)
    conf = np.where(outl, rng.uniform(cfg.outlier_conf[0], cfg.outlier_conf[1], (F, C, P, K)), conf)
    labels[outl] = 5

    # 6. Missed detections: runs over frames (onsets dilated by the duration), and dropped keypoints.
    onset = (rng.random((F, C, P)) < cfg.miss_prob).astype(np.int64)
    cs = np.cumsum(onset, 0)
    d = max(int(cfg.miss_duration), 1)
    prev = np.concatenate([np.zeros((min(d, F), C, P), np.int64), cs[:-d] if d < F else cs[:0]], 0)[:F]
    in_run = (cs - prev) > 0
    drop = (rng.random((F, C, P, K)) < cfg.miss_kpt_prob) | in_run[..., None]
    labels[drop] = 6

    # 7. Truncation: where the detector sees nothing (the exact keypoint is off-image or behind the camera). The
    # observed position may land off-image too, which the detector would clip: we leave it, confidence decides.
    labels[~in_image] = 7
    missing = drop | ~in_image
    conf = np.clip(conf, max(cfg.min_visible_conf, 0.01), 1.0)
    conf = np.where(missing, 0.0, conf)
    kp = np.concatenate([np.where(missing[..., None], 0.0, out), conf[..., None]], -1)
    return kp.astype(np.float32), labels
