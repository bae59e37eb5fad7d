"""Loss terms of the three-stage body fit (PIPELINE.md 1.5, Harmony4D Table 1), as pure functions.

Every term takes the posed quantities of ONE sequence in the fit's internal people-major layout
(`[people, frames, ...]`, so that one betas vector per person broadcasts over frames) and returns an unweighted
scalar. Terms are masked means (padded frames / people and invalid keypoints have weight 0), so a weight means the
same thing for a 100-frame and a 600-frame sequence and for padded batches.

Units. Table 1 gives weights but not the units they were tuned for. Position terms here are measured in
CENTIMETRES (`LENGTH_SCALE`): with metres, the shape prior (w_beta = 0.005 on unit-variance betas) outweighs the
limb term of a 2 cm limb-length error (19 * 0.02^2 = 0.008 vs 0.005 * |beta|^2 ~ 0.05) and pins every body to the
mean shape, and the rotation-smoothness term outweighs the joint term. In centimetres the paper's relative weights
give the intended data-dominated fit with mild priors. Rotations enter as matrices (Frobenius differences, no
units), betas are unitless.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Float

from h4djax.geometry.rotations import safe_norm
from h4djax.refine.limbs import LIMBS, SYMMETRIC_PAIRS

LENGTH_SCALE = 100.0
"""Metres -> centimetres for the position-based terms (joint, limb, symm); see the module docstring."""

TERMS: tuple[str, ...] = ("joint", "reg", "limb", "symm", "temporal", "beta", "collision")
"""Order of the per-term loss history in `FitSummary` and of the fields of `StageWeights`."""


@struct.dataclass
class FitTargets:
    """What the fit is fitted to, for one sequence (people-major).

    keypoints: refined COCO-17 keypoints (metres); weight: per-keypoint confidence in [0, 1] (0 = invalid or
    padding); frame_mask: 1 for real frames, 0 for padding; limb_lengths/limb_weight: per-person target limb
    lengths (median over valid frames, metres) used by the limb term.
    """

    keypoints: Float[Array, "people frames 17 3"]
    weight: Float[Array, "people frames 17"]
    frame_mask: Float[Array, "people frames"]
    limb_lengths: Float[Array, "people limbs"]
    limb_weight: Float[Array, "people limbs"]


def _masked_mean(x: Array, w: Array) -> Array:
    return (x * w).sum() / jnp.maximum(w.sum(), 1.0)


def limb_lengths(points: Float[Array, "... 17 3"]) -> Float[Array, "... limbs"]:
    """Lengths of the 19 COCO limbs (metres), NaN-safe at zero length."""
    return safe_norm(points[..., LIMBS[:, 0], :] - points[..., LIMBS[:, 1], :])


def joint_term(model_pts: Float[Array, "people frames 17 3"], targets: FitTargets,
               joint_mask: Float[Array, "17"]) -> Array:
    """Mean squared distance between model COCO points and the refined keypoints (cm^2)."""
    d2 = jnp.sum(((model_pts - targets.keypoints) * LENGTH_SCALE) ** 2, axis=-1)
    return _masked_mean(d2, targets.weight * joint_mask)


def limb_term(model_pts: Float[Array, "people frames 17 3"], targets: FitTargets) -> Array:
    """Mean squared difference between model limb lengths and the keypoints' limb lengths (cm^2)."""
    lengths = limb_lengths(model_pts)
    w = targets.limb_weight[:, None, :] * targets.frame_mask[..., None]
    return _masked_mean(((lengths - targets.limb_lengths[:, None, :]) * LENGTH_SCALE) ** 2, w)


def symmetry_term(model_pts: Float[Array, "people frames 17 3"], targets: FitTargets) -> Array:
    """Mean squared left/right limb-length difference of the model (cm^2); 8 pairs of PIPELINE.md 1.4."""
    lengths = limb_lengths(model_pts) * LENGTH_SCALE
    d = lengths[..., SYMMETRIC_PAIRS[:, 0]] - lengths[..., SYMMETRIC_PAIRS[:, 1]]
    w = jnp.broadcast_to(targets.frame_mask[..., None], d.shape)
    return _masked_mean(d**2, w)


def temporal_term(rotations: Float[Array, "people frames joints 3 3"], frame_mask: Float[Array, "people frames"]
                  ) -> Array:
    """Smoothness of joint rotations over time: mean over frame pairs of sum_j ||R_{t+1,j} - R_{t,j}||_F^2."""
    diff = jnp.sum((rotations[:, 1:] - rotations[:, :-1]) ** 2, axis=(-1, -2, -3))
    w = frame_mask[:, 1:] * frame_mask[:, :-1]
    return _masked_mean(diff, w)


def pose_reg_term(body_pose: Float[Array, "people frames 69"], frame_mask: Float[Array, "people frames"]) -> Array:
    """L2 pose regularizer (EgoHumans): mean over person-frames of |body_pose|^2 (rad^2)."""
    return _masked_mean(jnp.sum(body_pose**2, axis=-1), frame_mask)


def beta_term(betas: Float[Array, "people betas"], person_mask: Float[Array, "people"]) -> Array:
    """Shape prior: mean over people of |betas|^2 (betas are unit-variance, so this is a Gaussian prior)."""
    return _masked_mean(jnp.sum(betas**2, axis=-1), person_mask)
