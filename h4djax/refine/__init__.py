"""Whole-sequence 3D keypoint refinement (PIPELINE.md 1.4): gap filling, limb-outlier rejection, Savitzky-Golay
smoothing, then an Optax optimization of limb / symmetry / temporal / data terms over all frames and people."""

from h4djax.refine.gapfill import GapFilled, fill_gaps, limb_lengths, limb_outliers, preprocess, savgol_smooth
from h4djax.refine.limbs import COCO17_NAMES, LIMB_NAMES, LIMBS, SYMMETRIC_NAMES, SYMMETRIC_PAIRS
from h4djax.refine.losses import (
    TERM_NAMES,
    RefineObs,
    data_loss,
    limb_loss,
    loss_terms,
    make_obs,
    symm_loss,
    temporal_loss,
    total_loss,
)
from h4djax.refine.refine import (
    RefineOptions,
    RefineResult,
    RefineSummary,
    RefineWeights,
    refine,
    refine_keypoints,
)

__all__ = [
    "COCO17_NAMES", "LIMBS", "LIMB_NAMES", "SYMMETRIC_NAMES", "SYMMETRIC_PAIRS", "TERM_NAMES",
    "GapFilled", "RefineObs", "RefineOptions", "RefineResult", "RefineSummary", "RefineWeights",
    "data_loss", "fill_gaps", "limb_lengths", "limb_loss", "limb_outliers", "loss_terms", "make_obs", "preprocess",
    "refine", "refine_keypoints", "savgol_smooth", "symm_loss", "temporal_loss", "total_loss",
]
