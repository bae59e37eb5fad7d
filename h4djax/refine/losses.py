"""Loss terms of the whole-sequence 3D refinement (PIPELINE.md 1.4): pure functions `term(y, obs) -> scalar`.

    L = w_limb L_limb + w_symm L_symm + w_temporal L_temporal + w_data L_data      (all weights 1 in the paper)

Definitions. Harmony4D writes every term as a sum over t of a norm (L_limb = sum_t ||lambda_{t+1} - lambda_t||,
L_symm = sum_t ||lambda_left - lambda_right||, L_temporal = sum_t ||y_{t+1} - y_t||). The EgoHumans code that
produced the annotations (`SkeletonFit.evaluate`) uses |.| per limb for the two limb-length terms and squared L2
for the temporal and data terms, each averaged over frames (and over joints for temporal/data). We follow the
paper for the limb definition (lambda_{t+1} - lambda_t, `limb_mode="temporal"`) and the code for the penalties:

- L_limb = sum_l mean_t rho(lambda_{t+1,l} - lambda_{t,l}) ("temporal", paper), or rho(lambda_t - mean_t lambda)
  ("mean", EgoHumans code), or rho(lambda_t - median of the valid triangulated lengths) ("median", robust constant
  target).
  Default "median" (a documented deviation, RefineConfig.limb_mode). Limbs named in `free_limbs` (default the
  non-rigid shoulder-hip and ear-shoulder, RefineConfig.free_limbs) are left out of L_limb and L_symm.
- L_symm = sum_pairs mean_t rho(lambda_left - lambda_right). (EgoHumans sums over t here; we average so that a
  weight means the same for every sequence length.)
- L_temporal = mean_t mean_k ||y_{t+1,k} - y_{t,k}||^2 ("squared", EgoHumans) or mean_t mean_k rho(||.||) ("l2",
  the paper's unsquared norm).
- L_data = mean_t mean_k c_{t,k} ||y_{t,k} - x_{t,k}||^2, x = gap-filled, smoothed triangulation; c = 1 for
  observed joints, `w_filled` for filled ones, 0 for absent ones.

rho(r) = sqrt(r^2 + eps^2) - eps (Charbonnier) is |r| smoothed below eps (`norm_eps`, metres): differentiable and
NaN-free at 0 (so L-BFGS sees a smooth objective); eps = 0 gives the exact |r| with a zero gradient at 0. Limb
lengths use a NaN-safe norm. Sums run over people (each person is its own sequence, as in EgoHumans which fits
people one by one); means over real frames only, so padded frames and padded (all-invalid) people change nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Bool, Float

from h4djax.refine.gapfill import limb_lengths, limb_presence, masked_median, safe_norm
from h4djax.refine.limbs import LIMB_NAMES, SYMMETRIC_DIFF, SYMMETRIC_PAIRS

LIMB_MODES = ("temporal", "mean", "median")
TEMPORAL_PENALTIES = ("squared", "l2")
TERM_NAMES = ("limb", "symm", "temporal", "data")


@struct.dataclass
class RefineObs:
    """Everything the loss terms read besides y (build with `make_obs`). Traced fields, except the two static mode
    switches. The masks are loop invariants of the optimization, precomputed once as 0/1 floats."""

    target: Float[Array, "frames people kpts 3"]
    """Gap-filled, smoothed triangulation (m); 0 where absent."""
    data_weight: Float[Array, "frames people kpts"]
    """1 observed, w_filled filled, 0 absent or padded."""
    present: Bool[Array, "frames people kpts"]
    """Joint has a value (observed or filled) in a real frame."""
    step_mask: Float[Array, "frames_minus_1 people kpts"]
    """Joint present at t and t+1."""
    limb_mask: Float[Array, "frames people limbs"]
    """Both joints of the limb present."""
    limb_step_mask: Float[Array, "frames_minus_1 people limbs"]
    """Limb present at t and t+1."""
    symm_mask: Float[Array, "frames people pairs"]
    """Both limbs of the left/right pair present."""
    limb_target: Float[Array, "people limbs"]
    """Median of the valid triangulated limb lengths (m), used by limb_mode="median"."""
    limb_target_mask: Float[Array, "people limbs"]
    """1 where limb_target exists (the limb was observed at least once)."""
    num_frames: Float[Array, ""]
    """Real (unpadded) frame count L, as a float (normalizes the frame means)."""
    norm_eps: Float[Array, ""]
    """Charbonnier smoothing of |.| (m)."""
    limb_mode: str = struct.field(pytree_node=False, default="temporal")
    temporal_penalty: str = struct.field(pytree_node=False, default="squared")


def make_obs(
    target: Float[Array, "frames people kpts 3"],
    data_weight: Float[Array, "frames people kpts"],
    present: Bool[Array, "frames people kpts"],
    limb_target: Float[Array, "people limbs"],
    limb_target_valid: Bool[Array, "people limbs"],
    num_frames: Float[Array, ""],
    norm_eps: Float[Array, ""],
    *,
    limb_mode: str = "temporal",
    temporal_penalty: str = "squared",
    free_limbs: tuple[str, ...] = (),
) -> RefineObs:
    """RefineObs with its masks precomputed from `present` (frames >= num_frames must be absent).

    free_limbs: names (limbs.LIMB_NAMES) left out of L_limb and L_symm (their masks are 0): limbs that are not
    rigid on the body. A symmetric pair with a free limb is left out of L_symm.
    """
    unknown = set(free_limbs) - set(LIMB_NAMES)
    if unknown:
        raise ValueError(f"refine.free_limbs: {sorted(unknown)} not in {LIMB_NAMES}")
    if limb_mode not in LIMB_MODES:
        raise ValueError(f"refine.limb_mode: {limb_mode!r} is not one of {LIMB_MODES}")
    if temporal_penalty not in TEMPORAL_PENALTIES:
        raise ValueError(f"refine.temporal_penalty: {temporal_penalty!r} is not one of {TEMPORAL_PENALTIES}")
    dtype = target.dtype
    keep = np.array([name not in free_limbs for name in LIMB_NAMES])
    limb = limb_presence(present) & keep
    left, right = SYMMETRIC_PAIRS[:, 0], SYMMETRIC_PAIRS[:, 1]
    return RefineObs(
        target=target, data_weight=data_weight.astype(dtype), present=present,
        step_mask=_pairs(present).astype(dtype), limb_mask=limb.astype(dtype),
        limb_step_mask=_pairs(limb).astype(dtype), symm_mask=(limb[..., left] & limb[..., right]).astype(dtype),
        limb_target=limb_target.astype(dtype), limb_target_mask=limb_target_valid.astype(dtype),
        num_frames=jnp.asarray(num_frames, dtype), norm_eps=jnp.asarray(norm_eps, dtype),
        limb_mode=limb_mode, temporal_penalty=temporal_penalty,
    )


def charbonnier(r: Float[Array, "..."], eps: Float[Array, ""]) -> Float[Array, "..."]:
    """sqrt(r^2 + eps^2) - eps: |r| for |r| >> eps, r^2 / (2 eps) near 0; zero gradient at r = 0 when eps = 0."""
    s = r * r + eps * eps
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)) - eps, 0.0)


def _pairs(mask: Bool[Array, "frames ..."]) -> Bool[Array, "frames_minus_1 ..."]:
    return mask[1:] & mask[:-1]


def _frame_norm(obs: RefineObs, pairs: bool = False) -> Float[Array, ""]:
    n = obs.num_frames - 1.0 if pairs else obs.num_frames
    return jnp.maximum(n, 1.0)


def _limb_term(lam: Array, obs: RefineObs) -> Array:
    eps = obs.norm_eps
    if obs.limb_mode == "temporal":
        r = charbonnier(lam[1:] - lam[:-1], eps)
        return jnp.sum(obs.limb_step_mask * r) / _frame_norm(obs, pairs=True)
    if obs.limb_mode == "mean":
        w = obs.limb_mask
        mean = jnp.sum(w * lam, axis=0) / jnp.maximum(jnp.sum(w, axis=0), 1.0)
        return jnp.sum(w * charbonnier(lam - mean, eps)) / _frame_norm(obs)
    if obs.limb_mode == "median":
        r = charbonnier(lam - obs.limb_target, eps)
        return jnp.sum(obs.limb_mask * obs.limb_target_mask * r) / _frame_norm(obs)
    raise ValueError(f"refine.limb_mode: {obs.limb_mode!r} is not one of {LIMB_MODES}")


def _symm_term(lam: Array, obs: RefineObs) -> Array:
    diff = jnp.einsum("...l,ls->...s", lam, jnp.asarray(SYMMETRIC_DIFF, lam.dtype), precision=jax.lax.Precision.HIGHEST)
    r = charbonnier(diff, obs.norm_eps)
    return jnp.sum(obs.symm_mask * r) / _frame_norm(obs)


def limb_loss(y: Float[Array, "frames people kpts 3"], obs: RefineObs) -> Float[Array, ""]:
    """L_limb: limb lengths constant in time (see module docstring for the three modes)."""
    return _limb_term(limb_lengths(y), obs)


def symm_loss(y: Float[Array, "frames people kpts 3"], obs: RefineObs) -> Float[Array, ""]:
    """L_symm: left and right limb lengths equal (8 pairs of limbs.SYMMETRIC_PAIRS)."""
    return _symm_term(limb_lengths(y), obs)


def temporal_loss(y: Float[Array, "frames people kpts 3"], obs: RefineObs) -> Float[Array, ""]:
    """L_temporal: joint positions smooth in time (frame-to-frame displacement)."""
    d = y[1:] - y[:-1]
    if obs.temporal_penalty == "squared":
        r = jnp.sum(d * d, axis=-1)
    elif obs.temporal_penalty == "l2":
        r = charbonnier(safe_norm(d), obs.norm_eps)
    else:
        raise ValueError(f"refine.temporal_penalty: {obs.temporal_penalty!r} is not one of {TEMPORAL_PENALTIES}")
    return jnp.sum(obs.step_mask * r) / (_frame_norm(obs, pairs=True) * y.shape[-2])


def data_loss(y: Float[Array, "frames people kpts 3"], obs: RefineObs) -> Float[Array, ""]:
    """L_data: stay close to the (gap-filled) triangulation, weighted by validity."""
    d = y - obs.target
    return jnp.sum(obs.data_weight * jnp.sum(d * d, axis=-1)) / (_frame_norm(obs) * y.shape[-2])


TERMS = (limb_loss, symm_loss, temporal_loss, data_loss)
"""The four terms, in TERM_NAMES order (history columns, weight order)."""


def loss_terms(y: Float[Array, "frames people kpts 3"], obs: RefineObs) -> Float[Array, "4"]:
    """The unweighted terms stacked in TERM_NAMES order (same values as TERMS; limb lengths computed once)."""
    lam = limb_lengths(y)
    return jnp.stack([_limb_term(lam, obs), _symm_term(lam, obs), temporal_loss(y, obs), data_loss(y, obs)])


def total_loss(y: Float[Array, "frames people kpts 3"], obs: RefineObs, w: Float[Array, "4"]) -> Float[Array, ""]:
    """Weighted sum of the terms; w in TERM_NAMES order."""
    return jnp.dot(w, loss_terms(y, obs))


__all__ = [
    "LIMB_MODES", "TEMPORAL_PENALTIES", "TERM_NAMES", "TERMS", "RefineObs", "charbonnier", "data_loss",
    "limb_loss", "loss_terms", "make_obs", "masked_median", "symm_loss", "temporal_loss", "total_loss",
]
