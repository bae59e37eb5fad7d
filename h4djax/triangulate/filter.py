"""2D pose filtering before triangulation (PIPELINE.md 1.2), jitted over frames x cams.

Two rules from EgoHumans ``PoseModel.refine_poses`` (used by Harmony4D), applied per view:

1. Too few keypoints: a pose with ``min_keypoints - 1`` (5) or fewer of its COCO-17 body keypoints above
   ``keypoint_conf`` (0.2) is dropped (EgoHumans: ``is_valid.sum() <= MIN_VIS_KEYPOINTS`` -> removed).
2. Duplicates: for every pair (i, j), i < j, of the remaining poses in a view, in that order, the COCO object
   keypoint similarity on the 17 body keypoints is computed (``oks``); if it exceeds ``oks_threshold`` (0.7) the two
   poses are most likely the same body detected twice and EgoHumans invalidates *both*. The scan is sequential as
   in the reference: once a pose is invalidated, later pairs involving it are skipped (so with three poses A~B~C,
   A and B are dropped and C survives). ``oks_keep="higher"`` keeps the pose of the pair with the higher mean
   body-keypoint confidence instead (ties keep the first).

OKS between two poses (EgoHumans ``compute_kps_oks``): keypoints valid in both (conf > keypoint_conf); area = mean
of the two poses' tight keypoint-box areas (each over its own valid keypoints);
``oks = mean_k exp(-d_k^2 / (2 (2 sigma_k)^2 (area + eps)))`` with the COCO sigmas; 0.1 if no keypoint is shared.

A dropped pose keeps its coordinates but gets confidence 0 on every keypoint (all K, not only the 17), exactly what
the reference writes. The decisions are discrete (``stop_gradient``); gradients still flow to the kept keypoints.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from h4djax.config import FilterConfig

__all__ = ["COCO_SIGMAS", "FilterParams", "Filtered2D", "oks_matrix", "filter_view", "filter_keypoints",
           "filter_with_config"]

#: COCO-17 keypoint OKS sigmas (pycocotools; EgoHumans ``coco_17_sigmas``), body joint order of FORMATS.md.
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
_NUM_BODY = 17


@struct.dataclass
class FilterParams:
    """Traced filter settings (0-d arrays): keypoint_conf (0.2), min_keypoints (6), oks_threshold (0.7)."""

    keypoint_conf: Float[ArrayLike, ""]
    min_keypoints: Int[ArrayLike, ""]
    oks_threshold: Float[ArrayLike, ""]

    @classmethod
    def from_config(cls, cfg: FilterConfig | None = None, dtype=None) -> FilterParams:
        cfg = cfg or FilterConfig()
        dtype = dtype or jnp.result_type(float)
        return cls(keypoint_conf=jnp.asarray(cfg.keypoint_conf, dtype),
                   min_keypoints=jnp.asarray(cfg.min_keypoints, jnp.int32),
                   oks_threshold=jnp.asarray(cfg.oks_threshold, dtype))


@struct.dataclass
class Filtered2D:
    """Output of ``filter_keypoints``.

    keypoints:  f[frames, cams, people, kpts, 3]  input with confidence 0 on dropped poses (NaN-sanitized: a
                non-finite keypoint becomes (0, 0, 0)).
    pose_valid: b[frames, cams, people]  pose kept.
    too_few:    b[frames, cams, people]  dropped by the minimum-keypoint rule.
    duplicate:  b[frames, cams, people]  dropped by the OKS rule.
    oks:        f[frames, cams, people, people]  pairwise OKS (0 on the diagonal and for dropped-by-rule-1 poses).
    """

    keypoints: Float[Array, "frames cams people kpts 3"]
    pose_valid: Bool[Array, "frames cams people"]
    too_few: Bool[Array, "frames cams people"]
    duplicate: Bool[Array, "frames cams people"]
    oks: Float[Array, "frames cams people people"]


def _sanitize(kp: Float[Array, "... 3"]) -> Float[Array, "... 3"]:
    finite = jnp.all(jnp.isfinite(kp), axis=-1, keepdims=True)
    kp = jnp.where(finite, kp, 0.0)
    return kp.at[..., 2].set(jnp.maximum(kp[..., 2], 0.0))


def _box_area(xy: Float[Array, "kpts 2"], vis: Bool[Array, " kpts"]) -> Float[Array, ""]:
    big = jnp.asarray(np.finfo(np.dtype(xy.dtype)).max, xy.dtype)
    lo = jnp.min(jnp.where(vis[:, None], xy, big), axis=0)
    hi = jnp.max(jnp.where(vis[:, None], xy, -big), axis=0)
    wh = jnp.where(jnp.any(vis), hi - lo, 0.0)
    return wh[0] * wh[1]


def oks_matrix(
    kp: Float[Array, "people kpts 3"], keypoint_conf: Float[Array, ""]
) -> Float[Array, "people people"]:
    """Pairwise COCO OKS of the poses of one view on their first 17 (COCO body) keypoints (EgoHumans formula)."""
    body = kp[:, :_NUM_BODY]
    k = body.shape[1]
    sig = jnp.asarray(COCO_SIGMAS[:k], kp.dtype)
    vis = body[..., 2] > keypoint_conf  # [P, k]
    area = jax.vmap(_box_area)(body[..., :2], vis)  # [P]
    A = 0.5 * (area[:, None] + area[None, :])
    d2 = jnp.sum((body[:, None, :, :2] - body[None, :, :, :2]) ** 2, axis=-1)  # [P, P, k]
    var = (2.0 * sig) ** 2
    eps = jnp.asarray(np.spacing(np.asarray(1.0, np.dtype(kp.dtype))), kp.dtype)
    e = d2 / var / (A[..., None] + eps) / 2.0
    common = vis[:, None, :] & vis[None, :, :]
    n = jnp.sum(common, axis=-1)
    s = jnp.sum(jnp.where(common, jnp.exp(-e), 0.0), axis=-1)
    return jnp.where(n > 0, s / jnp.maximum(n, 1), 0.1)


def filter_view(
    kp: Float[Array, "people kpts 3"], params: FilterParams, keep: str = "none"
) -> tuple[Float[Array, "people kpts 3"], Bool[Array, " people"], Bool[Array, " people"], Bool[Array, " people"],
           Float[Array, "people people"]]:
    """Filter the poses of one view (kernel). Returns keypoints, pose_valid, too_few, duplicate, oks."""
    kp = _sanitize(kp)
    P = kp.shape[0]
    kd = jax.lax.stop_gradient(kp)
    vis = kd[:, :_NUM_BODY, 2] > params.keypoint_conf
    enough = jnp.sum(vis.astype(jnp.int32), axis=-1) >= params.min_keypoints
    oks = oks_matrix(kd, params.keypoint_conf)
    oks = jnp.where(jnp.eye(P, dtype=bool) | ~(enough[:, None] & enough[None, :]), 0.0, oks)
    mean_conf = jnp.mean(kd[:, :_NUM_BODY, 2], axis=-1)
    pairs = np.array(list(itertools.combinations(range(P), 2)), dtype=np.int32).reshape(-1, 2)

    def body(valid, ij):
        i, j = ij[0], ij[1]
        hit = valid[i] & valid[j] & (oks[i, j] > params.oks_threshold)
        if keep == "none":
            drop_i, drop_j = hit, hit
        else:  # "higher": keep the more confident pose of the pair (ties keep i, the earlier one)
            i_wins = mean_conf[i] >= mean_conf[j]
            drop_i, drop_j = hit & ~i_wins, hit & i_wins
        valid = valid.at[i].set(valid[i] & ~drop_i).at[j].set(valid[j] & ~drop_j)
        return valid, None

    if len(pairs):
        valid, _ = jax.lax.scan(body, enough, jnp.asarray(pairs))
    else:
        valid = enough
    out = kp.at[..., 2].set(jnp.where(valid[:, None], kp[..., 2], 0.0))
    return out, valid, ~enough, enough & ~valid, oks


@functools.partial(jax.jit, static_argnames=("keep",))
def filter_keypoints(
    keypoints: Float[ArrayLike, "frames cams people kpts 3"], params: FilterParams, *, keep: str = "none"
) -> Filtered2D:
    """Apply the 2D filters to every (frame, camera). ``keep``: "none" (EgoHumans: drop both duplicates) or
    "higher" (keep the more confident one). Keypoints must be in COCO order for the first 17 (FORMATS.md)."""
    if keep not in ("none", "higher"):
        raise ValueError(f"oks_keep must be 'none' or 'higher', got {keep!r}")
    kp = jnp.asarray(keypoints)
    fn = jax.vmap(jax.vmap(lambda x: filter_view(x, params, keep)))
    out, valid, too_few, dup, oks = fn(kp)
    return Filtered2D(keypoints=out, pose_valid=valid, too_few=too_few, duplicate=dup, oks=oks)


def filter_with_config(keypoints: Float[ArrayLike, "frames cams people kpts 3"],
                       cfg: FilterConfig | None = None) -> Filtered2D:
    """Host convenience: ``filter_keypoints`` with settings from a ``FilterConfig``."""
    cfg = cfg or FilterConfig()
    kp = jnp.asarray(keypoints)
    return filter_keypoints(kp, FilterParams.from_config(cfg, dtype=kp.dtype), keep=cfg.oks_keep)
