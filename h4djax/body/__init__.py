"""Body model: SMPL-layout `BodyModel` pytree, `SmplParams`, forward kinematics, LBS, keypoint regressors, loaders.

Public API (see docs/dev/CONTRACTS.md, section body):

- `load_body_model(path=None)` -> BodyModel (None = embedded `models/anny_smpl.npz`; `.pkl` / `.npz` otherwise)
- `smpl_forward(model, params)` -> BodyOutput(vertices, joints, keypoints)   (one person-frame, full mesh)
- `smpl_joints(model, params)` -> joints f[24,3]                             (no skinning)
- `smpl_joints_keypoints(model, params)` -> BodyOutput(None, joints, keypoints)  (no vertex skinned)
- `*_batch` versions of the three over any leading batch dims (betas / transl may broadcast from a prefix)
- `coco_fit_points(model, out)` -> f[...,17,3]  COCO -> SMPL correspondence used by the fit (PIPELINE.md 1.5)
"""

from h4djax.body.keypoints import (
    COCO17_NAMES,
    COCO23_NAMES,
    COCO_BODY_TO_SMPL,
    SMPL_VERTEX_IDS,
    coco_fit_points,
)
from h4djax.body.lbs import (
    blend_keypoints,
    forward_kinematics,
    rest_joints,
    skin_vertices,
    skinning_transforms,
    smpl_forward,
    smpl_forward_batch,
    smpl_joints,
    smpl_joints_batch,
    smpl_joints_keypoints,
    smpl_joints_keypoints_batch,
)
from h4djax.body.loaders import default_body_model_path, load_body_model, read_body_model_arrays
from h4djax.body.model import (
    SMPL_JOINT_NAMES,
    SMPL_PARENTS,
    BodyModel,
    BodyOutput,
    KeypointBlend,
    SmplParams,
    make_body_model,
)

__all__ = [
    "BodyModel", "BodyOutput", "KeypointBlend", "SmplParams", "make_body_model", "SMPL_JOINT_NAMES", "SMPL_PARENTS",
    "load_body_model", "default_body_model_path", "read_body_model_arrays",
    "rest_joints", "forward_kinematics", "skinning_transforms", "skin_vertices", "blend_keypoints",
    "smpl_forward", "smpl_joints", "smpl_joints_keypoints",
    "smpl_forward_batch", "smpl_joints_batch", "smpl_joints_keypoints_batch",
    "coco_fit_points", "COCO17_NAMES", "COCO23_NAMES", "COCO_BODY_TO_SMPL", "SMPL_VERTEX_IDS",
]
