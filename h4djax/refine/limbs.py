"""COCO-17 skeleton tables shared by the refinement (refine/) and the body fit (fit/).

One place for the index tables so that the limb / symmetry losses of the 3D refinement and of the SMPL fit use
exactly the same definitions. The 19 limbs and 8 left/right pairs are those of Harmony4D / EgoHumans
(PIPELINE.md 1.4; EgoHumans `COCO_SKELETON` follows mmpose's COCO skeleton). Tables are plain numpy constants: they
are static structure (they fix shapes), never traced values.
"""

from __future__ import annotations

import numpy as np

COCO17_NAMES: tuple[str, ...] = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)
"""COCO-17 keypoint order (FORMATS.md `joint_set = coco17`)."""

NUM_KPTS = len(COCO17_NAMES)

# (name, (joint a, joint b)); order as listed in PIPELINE.md 1.4.
_LIMBS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("l_leg", (13, 15)),            # l_knee - l_ankle
    ("r_leg", (14, 16)),            # r_knee - r_ankle
    ("l_thigh", (11, 13)),          # l_hip - l_knee
    ("r_thigh", (12, 14)),          # r_hip - r_knee
    ("hip", (11, 12)),              # l_hip - r_hip
    ("l_torso", (5, 11)),           # l_shoulder - l_hip
    ("r_torso", (6, 12)),           # r_shoulder - r_hip
    ("l_upper_arm", (5, 7)),        # l_shoulder - l_elbow
    ("r_upper_arm", (6, 8)),        # r_shoulder - r_elbow
    ("l_forearm", (7, 9)),          # l_elbow - l_wrist
    ("r_forearm", (8, 10)),         # r_elbow - r_wrist
    ("shoulder", (5, 6)),           # l_shoulder - r_shoulder
    ("l_eye_nose", (0, 1)),         # nose - l_eye
    ("r_eye_nose", (0, 2)),         # nose - r_eye
    ("eye_eye", (1, 2)),            # l_eye - r_eye
    ("l_eye_ear", (1, 3)),          # l_eye - l_ear
    ("r_eye_ear", (2, 4)),          # r_eye - r_ear
    ("l_ear_shoulder", (3, 5)),     # l_ear - l_shoulder
    ("r_ear_shoulder", (4, 6)),     # r_ear - r_shoulder
)

LIMB_NAMES: tuple[str, ...] = tuple(name for name, _ in _LIMBS)
LIMBS: np.ndarray = np.array([pair for _, pair in _LIMBS], dtype=np.int32)
"""i[19, 2]: the two COCO-17 joints of each limb."""
NUM_LIMBS = len(LIMB_NAMES)

# (name, (left limb, right limb)) as indices into LIMBS; PIPELINE.md 1.4 lists 8 pairs.
_SYMMETRIC: tuple[tuple[str, tuple[str, str]], ...] = (
    ("leg", ("l_leg", "r_leg")),
    ("thigh", ("l_thigh", "r_thigh")),
    ("torso", ("l_torso", "r_torso")),
    ("upper_arm", ("l_upper_arm", "r_upper_arm")),
    ("forearm", ("l_forearm", "r_forearm")),
    ("eye_nose", ("l_eye_nose", "r_eye_nose")),
    ("eye_ear", ("l_eye_ear", "r_eye_ear")),
    ("ear_shoulder", ("l_ear_shoulder", "r_ear_shoulder")),
)

SYMMETRIC_NAMES: tuple[str, ...] = tuple(name for name, _ in _SYMMETRIC)
SYMMETRIC_PAIRS: np.ndarray = np.array(
    [(LIMB_NAMES.index(left), LIMB_NAMES.index(right)) for _, (left, right) in _SYMMETRIC], dtype=np.int32
)
"""i[8, 2]: (left limb, right limb) indices into LIMBS."""
NUM_SYMMETRIC = len(SYMMETRIC_NAMES)

LIMB_INCIDENCE: np.ndarray = np.zeros((NUM_LIMBS, NUM_KPTS), dtype=np.float32)
"""f[19, 17]: 1 where the joint is an end of the limb (scatters per-limb flags onto joints with one matmul)."""
LIMB_INCIDENCE[np.arange(NUM_LIMBS), LIMBS[:, 0]] = 1.0
LIMB_INCIDENCE[np.arange(NUM_LIMBS), LIMBS[:, 1]] = 1.0

LIMB_DIFF: np.ndarray = np.zeros((NUM_KPTS, NUM_LIMBS), dtype=np.float32)
"""f[17, 19]: +1 at the limb's first joint, -1 at its second: x[..., k, :] contracted with it gives the limb vectors.
A constant matmul instead of two gathers: on CPU the gathers' gradients are scatter-adds, several times slower."""
LIMB_DIFF[LIMBS[:, 0], np.arange(NUM_LIMBS)] = 1.0
LIMB_DIFF[LIMBS[:, 1], np.arange(NUM_LIMBS)] = -1.0

SYMMETRIC_DIFF: np.ndarray = np.zeros((NUM_LIMBS, NUM_SYMMETRIC), dtype=np.float32)
"""f[19, 8]: lambda @ SYMMETRIC_DIFF = left minus right limb length of each symmetric pair."""
SYMMETRIC_DIFF[SYMMETRIC_PAIRS[:, 0], np.arange(NUM_SYMMETRIC)] = 1.0
SYMMETRIC_DIFF[SYMMETRIC_PAIRS[:, 1], np.arange(NUM_SYMMETRIC)] = -1.0
