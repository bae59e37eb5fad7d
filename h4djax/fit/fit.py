"""Three-stage whole-sequence body fit (PIPELINE.md 1.5, Harmony4D Table 1, EgoHumans schedule), in one jit.

Stages are data: a tuple of static `StageSpec` (free parameter groups, iteration count, optimizer, keypoint subset,
whether the collision term is evaluated) and a matching tuple of traced `StageWeights` (loss weights and learning
rate). Changing a weight or a learning rate never recompiles; changing which groups are free or how many iterations
run does (it changes the program).

Each stage optimizes only its free groups (the others are closed over), so frozen groups cost no gradient work and
L-BFGS line searches see the true objective. Every stage restarts its optimizer state, as EgoHumans creates a new
optimizer per stage; the stage schedule repeats for `epochs` epochs inside one `lax.scan`.

Layout: the fit works people-major (`[people, frames, ...]`) so that one betas vector per person broadcasts over
frames; `fit_sequence` takes and returns the frames-major layout of FORMATS.md.

Differentiability: with Adam stages (default) the whole fit is a `lax.scan` and reverse-mode differentiable, so
hypergradients w.r.t. loss weights, keypoints or cameras work. The analytic init is differentiated too (Adam
with a finite budget does not forget its start), and Adam ignores round-off gradients (`_drop_roundoff`), so a
stage that starts at its optimum leaves it unchanged instead of jumping by lr in a random direction. Adam's first
step is lr * sign(g): the fit is piecewise smooth, with jumps where a gradient entry changes sign, so finite
differences need a step small enough not to cross one. optax's L-BFGS with zoom line search runs a `while_loop`
that reverse mode cannot differentiate; use it for speed, not for hypergradients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jaxtyping import Array, Bool, Float

from h4djax.body.keypoints import coco_fit_points
from h4djax.body.lbs import smpl_forward_batch, smpl_joints_keypoints_batch
from h4djax.body.model import BodyModel, SmplParams
from h4djax.config import FitConfig
from h4djax.fit import losses
from h4djax.fit.init import TORSO, init_params
from h4djax.geometry.rotations import axis_angle_to_matrix, safe_norm
from h4djax.refine.limbs import LIMBS

GROUPS = ("global_orient", "body_pose", "betas", "transl")
CORRESPONDENCES = ("regressor", "paper")


def model_points(model: BodyModel, out, correspondence: str) -> Float[Array, "... 17 3"]:
    """The model's COCO-17 points the joint/limb terms compare with the keypoints.

    "paper" (PIPELINE.md 1.5): face points from mesh vertices, body points = SMPL joints. SMPL joints sit inside
    the body while detected (and triangulated) shoulders, hips and knees are surface landmarks, so this biases the
    fit by centimetres (measured on synthetic captures: docs/fit_report.md). "regressor" (default): all 17 from the
    model's COCO keypoint regressor on the posed mesh (sparse path), the points detectors are trained to find.
    Models without a full COCO-17 regressor (official SMPL files) fall back to "paper".
    """
    idx = model_point_index(model, correspondence)
    pts = jnp.concatenate([out.joints, out.keypoints], axis=-2)
    return jnp.take(pts, jnp.asarray(idx), axis=-2)


def model_point_index(model: BodyModel, correspondence: str) -> tuple[int, ...]:
    """Static indices into concat([joints, keypoints]) for `model_points` (host side, at trace time)."""
    from h4djax.body.keypoints import COCO17_NAMES, canonical_keypoint_name

    names = [canonical_keypoint_name(n) for n in model.kpt_names]
    if correspondence == "regressor" and all(n in names for n in COCO17_NAMES):
        return tuple(model.num_joints + names.index(n) for n in COCO17_NAMES)
    if not model.coco_fit_index:
        coco_fit_points(model, None)  # raises the BodyModelError that names the problem
    return model.coco_fit_index


@dataclass(frozen=True)
class StageSpec:
    """Static structure of one stage (hashable; part of the compiled program)."""

    name: str
    free: tuple[str, ...]
    iters: int
    optimizer: str = "adam"
    joints: str = "all"
    use_collision: bool = False
    correspondence: str = "regressor"
    collision_epochs: int = 0
    """With use_collision: evaluate the term in the last `collision_epochs` epochs only (0 = every epoch)."""

    def __post_init__(self):
        bad = [g for g in self.free if g not in GROUPS]
        if bad or not self.free:
            raise ValueError(f"stage '{self.name}': free groups must be a non-empty subset of {GROUPS}, got {self.free}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"stage '{self.name}': optimizer must be 'adam' or 'lbfgs', got '{self.optimizer}'")
        if self.correspondence not in CORRESPONDENCES:
            raise ValueError(f"stage '{self.name}': correspondence must be one of {CORRESPONDENCES}")
        if self.joints not in ("all", "torso"):
            raise ValueError(f"stage '{self.name}': joints must be 'all' or 'torso', got '{self.joints}'")
        if self.collision_epochs < 0:
            raise ValueError(f"stage '{self.name}': collision_epochs must be >= 0, got {self.collision_epochs}")


@struct.dataclass
class StageWeights:
    """Traced loss weights and learning rate of one stage (Harmony4D Table 1)."""

    w_joint: Float[Array, ""]
    w_reg: Float[Array, ""]
    w_limb: Float[Array, ""]
    w_symm: Float[Array, ""]
    w_temporal: Float[Array, ""]
    w_beta: Float[Array, ""]
    w_collision: Float[Array, ""]
    learning_rate: Float[Array, ""]

    def vector(self) -> Float[Array, "terms"]:
        """Weights in `losses.TERMS` order."""
        return jnp.stack([self.w_joint, self.w_reg, self.w_limb, self.w_symm, self.w_temporal, self.w_beta,
                          self.w_collision])


@struct.dataclass
class FitSummary:
    """Per-stage loss history: `history[s]` is f[epochs, iters_s, terms] of UNWEIGHTED terms (losses.TERMS order),
    `total[s]` f[epochs, iters_s] the weighted objective."""

    history: tuple[Float[Array, "epochs iters terms"], ...]
    total: tuple[Float[Array, "epochs iters"], ...]


def stages_from_config(cfg: FitConfig, collision_available: bool = False
                       ) -> tuple[tuple[StageSpec, ...], tuple[StageWeights, ...]]:
    """Split the config's stages into static specs and traced weights.

    The collision term is evaluated (and needs the full mesh) only in stages whose configured w_collision is
    non-zero, and there only in the last `cfg.collision_epochs` epochs (0 = all); turning it on or off is a
    structural change (recompiles), its value is not.
    """
    specs, weights = [], []
    for st in cfg.stages:
        use_col = st.w_collision != 0.0
        if use_col and not collision_available:
            raise ValueError(f"stage '{st.name}' has w_collision={st.w_collision} but no collision term was given")
        specs.append(StageSpec(name=st.name, free=tuple(st.free), iters=st.iters, optimizer=st.optimizer,
                               joints=st.joints, use_collision=use_col, correspondence=cfg.correspondence,
                               collision_epochs=cfg.collision_epochs if use_col else 0))
        weights.append(StageWeights(*(jnp.asarray(getattr(st, f), jnp.float32) for f in (
            "w_joint", "w_reg", "w_limb", "w_symm", "w_temporal", "w_beta", "w_collision", "learning_rate"))))
    return tuple(specs), tuple(weights)


def make_targets(keypoints: Float[Array, "frames people 17 3"], weight: Float[Array, "frames people 17"],
                 frame_mask: Float[Array, "frames"] | None = None) -> losses.FitTargets:
    """Targets for one sequence from frames-major keypoints (metres) and per-keypoint weights in [0, 1]."""
    F, P = keypoints.shape[:2]
    fm = jnp.ones((F,), keypoints.dtype) if frame_mask is None else frame_mask.astype(keypoints.dtype)
    kp = jnp.swapaxes(keypoints, 0, 1)
    w = jnp.swapaxes(weight, 0, 1).astype(keypoints.dtype) * fm[None, :, None]
    kp = jnp.where(w[..., None] > 0, kp, 0.0)  # NaN-free even where the input had NaN at invalid keypoints
    lengths = safe_norm(kp[..., LIMBS[:, 0], :] - kp[..., LIMBS[:, 1], :])
    ok = (w[..., LIMBS[:, 0]] > 0) & (w[..., LIMBS[:, 1]] > 0)
    # Median over valid frames without NaN arithmetic: sort with invalid entries pushed to +inf.
    big = jnp.where(ok, lengths, jnp.inf)
    srt = jnp.sort(big, axis=1)
    n = ok.sum(axis=1)
    lo = jnp.take_along_axis(srt, jnp.maximum((n - 1) // 2, 0)[:, None, :], axis=1)[:, 0]
    hi = jnp.take_along_axis(srt, jnp.maximum(n // 2, 0)[:, None, :], axis=1)[:, 0]
    med = jnp.where(n > 0, 0.5 * (lo + hi), 0.0)
    return losses.FitTargets(keypoints=kp, weight=w, frame_mask=jnp.broadcast_to(fm, (P, F)),
                             limb_lengths=med, limb_weight=(n > 0).astype(keypoints.dtype))


CollisionFn = Callable[[Float[Array, "people frames verts 3"], Float[Array, "people frames"]], Float[Array, ""]]
"""The collision term: people-major vertices and frame mask -> scalar. A collision function may also be stateful
(attribute `stateful = True`, e.g. `h4djax.collision.CollisionTerm` with method "sdf"): then it provides
`init_state(people, frames, verts, dtype) -> state` and `apply(state, verts, frame_mask) -> (value, state)`, and
Adam stages carry the state through their iterations (the SDF grid cache: grids are rebuilt only where the bodies
moved more than `collision.grid_tolerance`). L-BFGS stages always call it statelessly (its line search evaluates
points that are not iterates)."""


def _terms(model: BodyModel, params: SmplParams, targets: losses.FitTargets, spec: StageSpec,
           collision_fn: CollisionFn | None, cstate=None):
    """All unweighted loss terms of one sequence in `losses.TERMS` order, and the collision state (None when the
    term is stateless or off)."""
    if spec.use_collision:
        out = smpl_forward_batch(model, params)
        if cstate is None:
            col = collision_fn(out.vertices, targets.frame_mask)
        else:
            col, cstate = collision_fn.apply(cstate, out.vertices, targets.frame_mask)
    else:
        out = smpl_joints_keypoints_batch(model, params)  # joints-only path: no 13k-vertex skinning
        col = jnp.zeros((), targets.keypoints.dtype)
    pts = model_points(model, out, spec.correspondence)
    joint_mask = jnp.zeros((17,), pts.dtype).at[jnp.asarray(TORSO)].set(1.0) if spec.joints == "torso" \
        else jnp.ones((17,), pts.dtype)
    rots = axis_angle_to_matrix(params.full_pose())
    person_mask = (targets.frame_mask.sum(axis=1) > 0).astype(pts.dtype)
    return jnp.stack([
        losses.joint_term(pts, targets, joint_mask),
        losses.pose_reg_term(params.body_pose, targets.frame_mask),
        losses.limb_term(pts, targets),
        losses.symmetry_term(pts, targets),
        losses.temporal_term(rots, targets.frame_mask),
        losses.beta_term(params.betas, person_mask),
        col,
    ]), cstate


def _optimizer(spec: StageSpec, lr: Array) -> optax.GradientTransformationExtraArgs:
    if spec.optimizer == "adam":
        # eps_root > 0 keeps d sqrt(v) finite where a gradient is exactly zero (e.g. hand joints no keypoint sees),
        # which reverse-mode hypergradients through the optimizer need (optax docs on differentiating Adam).
        return optax.adam(lr, eps_root=1e-16)
    # optax's L-BFGS with zoom line search (the learning rate is unused; the line search picks steps).
    return optax.lbfgs()


def _drop_roundoff(grad, value: Array, lr: Array):
    """Zero the gradient entries that are round-off, so Adam does not turn them into full steps.

    Adam divides by sqrt(v): its first step is lr * sign(g) per coordinate however small g is. A stage that starts
    at its own optimum (e.g. the torso-only global stage right after the Kabsch init when the torso points do not
    depend on the body pose) has a gradient of pure round-off (1e-13 in float64 on the toy model), so it took
    steps of lr (0.05 rad, 5 cm) in directions set by rounding: the fit became a discontinuous function of its
    inputs at the 1e-6 m scale, and finite differences through it were noise. An entry counts as round-off when
    the largest first-order decrease an Adam step on it could buy, lr * |g_i|, is below sqrt(eps) |f| / n (n free
    entries): below the objective's working precision. Real gradients are many orders above that (a 1 um
    misalignment is ~1e6 times the bound in float64); gradients at float32 precision of the init are not caught.
    """
    leaves = jax.tree.leaves(grad)
    n = sum(x.size for x in leaves)
    tol = jnp.sqrt(jnp.finfo(leaves[0].dtype).eps) * jnp.abs(value) / n
    return jax.tree.map(lambda g: jnp.where(lr * jnp.abs(g) <= tol, jnp.zeros_like(g), g), grad)


def _run_stage(model: BodyModel, params: SmplParams, targets: losses.FitTargets, spec: StageSpec,
               weights: StageWeights, collision_fn: CollisionFn | None):
    """Optimize the free groups of `params` for `spec.iters` iterations; returns (params, history, total)."""
    free = {g: getattr(params, g) for g in spec.free}
    w = weights.vector()

    def objective(free_, cstate=None):
        p = params.replace(**free_)
        terms, cstate = _terms(model, p, targets, spec, collision_fn, cstate)
        return jnp.dot(w, terms), (terms, cstate)

    opt = _optimizer(spec, weights.learning_rate)
    state = opt.init(free)

    if spec.optimizer == "adam":
        # A stateful collision term (SDF grid cache) starts empty in every stage run: its first iteration builds
        # every grid it needs, so the cache never outlives the stage that filled it.
        stateful = spec.use_collision and getattr(collision_fn, "stateful", False)
        cstate = collision_fn.init_state(params.body_pose.shape[0], params.body_pose.shape[1], model.num_verts,
                                         params.body_pose.dtype) if stateful else None

        def step(carry, _):
            x, s, cs = carry
            (value, (terms, cs)), g = jax.value_and_grad(objective, has_aux=True)(x, cs)
            upd, s = opt.update(_drop_roundoff(g, value, weights.learning_rate), s, x)
            return (optax.apply_updates(x, upd), s, cs), (terms, value)

        (free, _, _), (history, total) = jax.lax.scan(step, (free, state, cstate), None, length=spec.iters)
    else:
        value_fn = lambda x: objective(x)[0]  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(value_fn)

        def step(carry, _):
            x, s = carry
            value, g = value_and_grad(x, state=s)
            terms = objective(x)[1][0]
            upd, s = opt.update(g, s, x, value=value, grad=g, value_fn=value_fn)
            return (optax.apply_updates(x, upd), s), (terms, value)

        (free, _), (history, total) = jax.lax.scan(step, (free, state), None, length=spec.iters)
    return params.replace(**free), history, total


def fit_targets(model: BodyModel, targets: losses.FitTargets, specs: tuple[StageSpec, ...],
                weights: tuple[StageWeights, ...], epochs: int, init: SmplParams | None = None,
                collision_fn: CollisionFn | None = None) -> tuple[SmplParams, FitSummary]:
    """Fit one sequence (people-major targets); returns people-major SmplParams and the loss history."""
    if init is None:
        kp = jnp.swapaxes(targets.keypoints, 0, 1)
        valid = jnp.swapaxes(targets.weight > 0, 0, 1)
        init = init_params(model, kp, valid, specs[0].correspondence)  # frames-major poses, [P, B] betas
        # No stop_gradient: a finite Adam budget does not forget its start (each step is ~lr whatever the
        # distance to the optimum), so the fitted parameters move with the init, about 1:1 for transl. With the
        # init held fixed, jax.grad w.r.t. the keypoints missed that term (all of it in the test_fit.py regression
        # case: 0 vs -11.06; about half after three stages of 3 steps). Where a stage starts at its own optimum
        # (the Kabsch init solves a torso-only global stage when the torso points do not depend on the body pose:
        # "paper" correspondence, the toy model) it also saw the stage gradient change at first order while in
        # truth it stays 0, amplified by Adam's 1 / (sqrt(v) + eps) ~ 1e8: d metric / d pixel was -1.7e6 through
        # the pipeline test instead of -2.8e-6 (see also `_drop_roundoff`).
        init = SmplParams(
            global_orient=jnp.swapaxes(init.global_orient, 0, 1), body_pose=jnp.swapaxes(init.body_pose, 0, 1),
            betas=init.betas, transl=jnp.swapaxes(init.transl, 0, 1))

    def epoch_fn(specs_):
        def epoch(params, _):
            hist, tot = [], []
            for spec, wts in zip(specs_, weights):  # static, a handful of stages
                params, h, t = _run_stage(model, params, targets, spec, wts, collision_fn)
                hist.append(h)
                tot.append(t)
            return params, (tuple(hist), tuple(tot))
        return epoch

    # Epochs whose stage structure is the same run as one scan; a stage with collision_epochs = n > 0 evaluates
    # the collision term only in the last n epochs, so the schedule splits into (at most a few) runs of epochs.
    def specs_at(e):
        return tuple(dataclasses.replace(s, use_collision=False)
                     if s.use_collision and 0 < s.collision_epochs <= epochs - 1 - e else s for s in specs)

    runs: list[tuple[tuple[StageSpec, ...], int]] = []
    for e in range(epochs):
        sp = specs_at(e)
        if runs and runs[-1][0] == sp:
            runs[-1] = (sp, runs[-1][1] + 1)
        else:
            runs.append((sp, 1))
    params, parts = init, []
    for sp, n in runs:
        params, part = jax.lax.scan(epoch_fn(sp), params, None, length=n)
        parts.append(part)
    hist, tot = jax.tree.map(lambda *x: jnp.concatenate(x, axis=0), *parts) if len(parts) > 1 else parts[0]
    return params, FitSummary(history=hist, total=tot)


def to_frames_major(params: SmplParams) -> SmplParams:
    """People-major fit parameters -> FORMATS.md layout (global_orient/body_pose/transl [F,P,...], betas [P,B])."""
    sw = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    return SmplParams(global_orient=sw(params.global_orient), body_pose=sw(params.body_pose), betas=params.betas,
                      transl=sw(params.transl))


def fit_sequence(model: BodyModel, keypoints: Float[Array, "frames people 17 3"],
                 weight: Float[Array, "frames people 17"], specs: tuple[StageSpec, ...],
                 weights: tuple[StageWeights, ...], epochs: int, frame_mask: Float[Array, "frames"] | None = None,
                 collision_fn: CollisionFn | None = None) -> tuple[SmplParams, FitSummary]:
    """Fit the body model to one sequence of COCO-17 keypoints (metres).

    keypoint weights in [0, 1] (0 = invalid); returns SmplParams in FORMATS.md layout and the loss history.
    Jit with `specs`, `epochs` and `collision_fn` static (see `fit_batch` for the compiled entry point).
    """
    targets = make_targets(keypoints, weight, frame_mask)
    params, summary = fit_targets(model, targets, specs, weights, epochs, collision_fn=collision_fn)
    return to_frames_major(params), summary


def _fit_batch(model, keypoints, weight, frame_mask, weights, specs, epochs, collision_fn):
    fn = lambda k, w, m: fit_sequence(model, k, w, specs, weights, epochs, m, collision_fn)  # noqa: E731
    return jax.vmap(fn)(keypoints, weight, frame_mask)


fit_batch = jax.jit(_fit_batch, static_argnames=("specs", "epochs", "collision_fn"))
"""Fit a padded batch of sequences: keypoints f[batch, frames, people, 17, 3], weight f[batch, frames, people, 17],
frame_mask f[batch, frames]; weights a tuple of StageWeights (traced). vmapped over the batch axis, which can be
sharded over devices with `jax.sharding` (sequences are independent)."""
