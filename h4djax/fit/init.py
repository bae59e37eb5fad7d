"""Network-free initialization of the body fit from 3D keypoints (PIPELINE.md 1.5).

Harmony4D initializes with CLIFF, a monocular network run per view. h4djax needs no network: with 3D keypoints
already triangulated and refined, a rest-pose skeleton can be aligned analytically, which is faster and
deterministic:

1. shape: a few damped Gauss-Newton steps on the limb lengths of the rest-pose model (limb lengths are linear in
   betas before the norm, so this converges in 3-5 steps),
2. global orientation + translation: weighted Kabsch (with reflection guard) of the rest-pose torso points
   (shoulders, hips) onto the observed ones, per frame and person,
3. analytic per-bone rotations: for the upper arms, forearms, thighs and shins, the minimal rotation that turns the
   rest bone direction onto the observed one, composed down the kinematic chain.

Everything runs for one person-frame (or one person for the shape) and is lifted with vmap. The fit
differentiates through it (a few Adam iterations do not forget their start, see `h4djax.fit.fit.fit_targets`);
the Kabsch SVD has a finite derivative while the torso's two largest singular values differ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from h4djax.body.lbs import rest_joints, smpl_joints_keypoints
from h4djax.body.model import BodyModel, SmplParams
from h4djax.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, safe_norm
from h4djax.refine.limbs import LIMBS

# COCO-17 indices.
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 11, 12, 13, 14, 15, 16
TORSO = (L_SHOULDER, R_SHOULDER, L_HIP, R_HIP)

# Bones whose direction sets a SMPL joint's rotation: (smpl joint, smpl parent, coco start, coco end).
# Level 1 hangs off the pelvis/spine (spine, neck and collars stay at zero), level 2 off level 1.
_LEVEL1 = ((1, L_HIP, L_KNEE), (2, R_HIP, R_KNEE), (16, L_SHOULDER, L_ELBOW), (17, R_SHOULDER, R_ELBOW))
_LEVEL2 = ((4, L_KNEE, L_ANKLE), (5, R_KNEE, R_ANKLE), (18, L_ELBOW, L_WRIST), (19, R_ELBOW, R_WRIST))


def _rest_points(model: BodyModel, betas: Float[Array, "betas"], correspondence: str) -> Float[Array, "17 3"]:
    from h4djax.fit.fit import model_points

    zero = SmplParams.zeros(num_betas=model.num_betas, dtype=model.dtype)
    out = smpl_joints_keypoints(model, zero.replace(betas=betas))
    return model_points(model, out, correspondence)


def init_betas(
    model: BodyModel,
    target: Float[Array, "frames 17 3"],
    valid: Bool[Array, "frames 17"],
    correspondence: str = "regressor",
    iters: int = 5,
    damping: float = 1e-2,
) -> Float[Array, "betas"]:
    """Betas whose rest-pose limb lengths match the median observed limb lengths of one person (metres).

    Damped Gauss-Newton on r_k = |l_k(beta)| - L_k with a unit-variance prior (betas are scaled to unit variance),
    so a badly observed person stays near the mean shape.
    """
    a, b = LIMBS[:, 0], LIMBS[:, 1]
    lengths = safe_norm(target[:, a] - target[:, b])  # [F, limbs]
    limb_ok = valid[:, a] & valid[:, b]
    # Median over valid frames; limbs never seen get weight 0.
    masked = jnp.where(limb_ok, lengths, jnp.nan)
    observed = jnp.nanmedian(masked, axis=0)
    w = jnp.isfinite(observed).astype(target.dtype)
    observed = jnp.where(w > 0, observed, 0.0)

    def residual(betas):
        p = _rest_points(model, betas, correspondence)
        return w * (safe_norm(p[a] - p[b]) - observed)

    def step(betas, _):
        r = residual(betas)
        J = jax.jacfwd(residual)(betas)
        H = J.T @ J + damping * jnp.eye(betas.shape[0], dtype=betas.dtype)
        g = J.T @ r + damping * betas
        return betas - jnp.linalg.solve(H, g), None

    betas0 = jnp.zeros((model.num_betas,), model.dtype)
    betas, _ = jax.lax.scan(step, betas0, None, length=iters)
    return betas


def weighted_kabsch(
    src: Float[Array, "n 3"], dst: Float[Array, "n 3"], w: Float[Array, "n"]
) -> tuple[Float[Array, "3 3"], Float[Array, "3"]]:
    """Rotation R and translation t minimizing sum_i w_i |R src_i + t - dst_i|^2 (no scale, det R = +1).

    With fewer than 3 weighted points the rotation is ill-posed; the result is then the identity (checked by the
    caller through the weights).
    """
    wsum = jnp.maximum(w.sum(), 1e-12)
    mu_s = (w[:, None] * src).sum(0) / wsum
    mu_d = (w[:, None] * dst).sum(0) / wsum
    H = ((src - mu_s) * w[:, None]).T @ (dst - mu_d)
    U, _, Vt = jnp.linalg.svd(H)
    d = jnp.sign(jnp.linalg.det(Vt.T @ U.T))
    d = jnp.where(d == 0, 1.0, d)
    D = jnp.diag(jnp.array([1.0, 1.0, 1.0], src.dtype).at[2].set(d))
    R = Vt.T @ D @ U.T
    ok = (w > 0).sum() >= 3
    R = jnp.where(ok, R, jnp.eye(3, dtype=src.dtype))
    return R, mu_d - R @ mu_s


def rotation_between(a: Float[Array, "3"], b: Float[Array, "3"]) -> Float[Array, "3 3"]:
    """Minimal rotation turning direction a onto direction b (NaN-safe for parallel vectors)."""
    a = a / jnp.maximum(safe_norm(a), 1e-12)
    b = b / jnp.maximum(safe_norm(b), 1e-12)
    cross = jnp.cross(a, b)
    s = safe_norm(cross)
    c = jnp.dot(a, b)
    angle = jnp.arctan2(s, c)
    axis = cross / jnp.maximum(s, 1e-12)
    return axis_angle_to_matrix(axis * angle)


def init_pose_one(
    model: BodyModel,
    betas: Float[Array, "betas"],
    target: Float[Array, "17 3"],
    valid: Bool[Array, "17"],
    correspondence: str = "regressor",
) -> SmplParams:
    """Global orientation, translation and limb rotations of one person-frame from its COCO-17 keypoints."""
    dtype = model.dtype
    rest = _rest_points(model, betas, correspondence)  # rest-pose COCO points, pelvis-relative at zero translation
    torso = jnp.asarray(TORSO)
    R_go, t = weighted_kabsch(rest[torso], target[torso], valid[torso].astype(dtype))

    def place(levels, parent_world):
        """Local rotations for the bones of one level given their parents' world rotations [4,3,3]."""
        idx = jnp.asarray([(s, e) for _, s, e in levels])
        rest_dir = rest[idx[:, 1]] - rest[idx[:, 0]]
        tgt_dir = target[idx[:, 1]] - target[idx[:, 0]]
        ok = valid[idx[:, 0]] & valid[idx[:, 1]]
        current = jnp.einsum("nij,nj->ni", parent_world, rest_dir)
        swing = jax.vmap(rotation_between)(current, tgt_dir)
        swing = jnp.where(ok[:, None, None], swing, jnp.eye(3, dtype=dtype))
        world = swing @ parent_world
        local = jnp.swapaxes(parent_world, -1, -2) @ world
        return local, world

    parent1 = jnp.broadcast_to(R_go, (len(_LEVEL1), 3, 3))
    local1, world1 = place(_LEVEL1, parent1)
    local2, _ = place(_LEVEL2, world1)

    body = jnp.zeros((23, 3), dtype)
    joints1 = jnp.asarray([j for j, _, _ in _LEVEL1]) - 1
    joints2 = jnp.asarray([j for j, _, _ in _LEVEL2]) - 1
    body = body.at[joints1].set(matrix_to_axis_angle(local1))
    body = body.at[joints2].set(matrix_to_axis_angle(local2))
    # SMPL rotates about the root joint J0: X = R (x - J0) + J0 + transl, while Kabsch gives X = R x + t.
    root = rest_joints(model, betas)[0]
    transl = t - root + R_go @ root
    return SmplParams(global_orient=matrix_to_axis_angle(R_go), body_pose=body.reshape(69), betas=betas,
                      transl=transl)


def init_params(
    model: BodyModel,
    target: Float[Array, "frames people 17 3"],
    valid: Bool[Array, "frames people 17"],
    correspondence: str = "regressor",
) -> SmplParams:
    """Initial SmplParams for one sequence: global_orient/body_pose/transl [F,P,...], betas [P,betas]."""
    betas = jax.vmap(lambda tg, v: init_betas(model, tg, v, correspondence), in_axes=(1, 1))(target, valid)
    per_frame = jax.vmap(jax.vmap(lambda b, tg, v: init_pose_one(model, b, tg, v, correspondence),
                                  in_axes=(0, 0, 0)),
                         in_axes=(None, 0, 0))
    p = per_frame(betas, target, valid)
    return SmplParams(global_orient=p.global_orient, body_pose=p.body_pose, betas=betas, transl=p.transl)
