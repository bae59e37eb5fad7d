"""Whole-sequence 3D keypoint refinement (PIPELINE.md 1.4) as one jittable, differentiable function.

    result = refine(xyz, valid, weights, options, frame_mask=None)

1. Pre-processing (gapfill.py, EgoHumans `refine_pose3d`): polynomial gap filling, limb-outlier rejection and
   refill, Savitzky-Golay smoothing.
2. Optimization of w_limb L_limb + w_symm L_symm + w_temporal L_temporal + w_data L_data (losses.py) over all
   frames and people at once, starting from the pre-processed sequence, with Optax: L-BFGS (optax.scale_by_lbfgs,
   as in optax.lbfgs) with a backtracking (Armijo, step halving) or zoom (strong Wolfe; EgoHumans uses torch LBFGS
   with strong-Wolfe) line search, or Adam. The iterations are a `lax.scan` with a pre-sized per-iteration,
   per-term loss history; after convergence (relative decrease <= ftol) the remaining iterations are skipped
   (`lax.cond`). Safeguards around optax's L-BFGS: a failed backtracking search takes no step (optax would take
   its last trial), and a memory pair without positive curvature restarts the memory.

Deviations from the paper / EgoHumans (defaults; each one switchable back in RefineConfig, reasons in its doc):
- limb outliers are tested against the median +- 5 robust sigma (1.4826 MAD) instead of mean +- 10 std
  (`outlier_stat`): the gross outliers inflate the std so much that 10 std never fires;
- L_limb pulls towards the median of the valid triangulated lengths (`limb_mode="median"`) instead of penalizing
  lambda_{t+1} - lambda_t: same structure (a limb-constancy term), exactly constant rigid limbs;
- shoulder-hip and ear-shoulder are left out of L_limb and L_symm (`free_limbs`): they are not rigid.
On the hard synthetic preset (20 cameras, 600 frames, hug) the paper's settings give a refined MPJPE of 27.8 mm
against 26.7 mm for the triangulation (the surviving outliers are spread by the smoothing and bias the limb
lengths); with these defaults 11.2 mm, rigid-limb length std 0.00 mm.

Static vs traced: `RefineOptions` (iteration count, optimizer, modes, windows) is a static argument; every number
in `RefineWeights` (loss weights, filled-joint weight, norm epsilon, outlier sigma, learning rate, ftol) is a traced
leaf, so changing it never recompiles.

Differentiability: `jax.grad` of anything in the result w.r.t. xyz (or the weights) works. It differentiates the
unrolled iterations: gap filling (a batched linear solve), smoothing, and every optimizer step. Optax line searches
loop with `lax.while_loop` (no reverse mode), so the search runs on stop-gradient copies of its inputs and the
accepted step size is treated as a constant. The backtracking search (default) only accepts step sizes from a
discrete set (powers of its decrease factor), so the result is piecewise smooth and the gradient exact almost
everywhere (tested against finite differences), as for Adam. The zoom search interpolates its step size, whose
derivative is then missing (the gradient is approximate unless the unit step is accepted). Reverse mode stores the
optimizer state of every iteration (about 2 * memory_size copies of y for L-BFGS).

Batches: xyz [B, F, P, 17, 3] with frame_mask [B, F] refines B independent sequences padded (at the end) to the
same length F (vmap). A padded person is one whose joints are all invalid: it contributes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from h4djax.config import RefineConfig
from h4djax.errors import ConfigError, H4DError
from h4djax.refine.gapfill import LONG_GAP_MODES, OUTLIER_STATS, limb_lengths, limb_presence, masked_median, preprocess
from h4djax.refine.limbs import LIMB_NAMES, NUM_KPTS, SYMMETRIC_PAIRS
from h4djax.refine.losses import (
    LIMB_MODES,
    TEMPORAL_PENALTIES,
    TERM_NAMES,
    RefineObs,
    loss_terms,
    make_obs,
)

OPTIMIZERS = ("lbfgs", "adam")
LINESEARCHES = ("zoom", "backtracking")


@dataclass(frozen=True)
class RefineOptions:
    """Static (structural) settings: changing one recompiles. Build from the config with `from_config`."""

    iters: int = 200
    optimizer: str = "lbfgs"
    linesearch: str = "backtracking"
    linesearch_steps: int = 20
    memory_size: int = 5
    interp_window: int = 10
    interp_order: int = 3
    long_gap: str = "linear"
    savgol_window: int = 5
    savgol_order: int = 3
    limb_mode: str = "median"
    temporal_penalty: str = "squared"
    outlier_stat: str = "mad"
    free_limbs: tuple[str, ...] = ("l_torso", "r_torso", "l_ear_shoulder", "r_ear_shoulder")

    def __post_init__(self) -> None:
        choices = {
            "optimizer": OPTIMIZERS, "linesearch": LINESEARCHES, "long_gap": LONG_GAP_MODES,
            "limb_mode": LIMB_MODES, "temporal_penalty": TEMPORAL_PENALTIES, "outlier_stat": OUTLIER_STATS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"refine.{name}: {getattr(self, name)!r} is not one of {allowed}")
        for name in ("iters", "linesearch_steps", "memory_size", "interp_order"):
            if getattr(self, name) < 1:
                raise ConfigError(f"refine.{name}: must be >= 1, got {getattr(self, name)}")
        unknown = set(self.free_limbs) - set(LIMB_NAMES)
        if unknown:
            raise ConfigError(f"refine.free_limbs: {sorted(unknown)} are not limbs of {LIMB_NAMES}")
        if self.interp_window < 0:
            raise ConfigError(f"refine.interp_window: must be >= 0, got {self.interp_window}")
        if self.savgol_window > self.savgol_order and self.savgol_window % 2 == 0:
            raise ConfigError(
                f"refine.savgol_window: must be odd (or <= savgol_order to disable), got {self.savgol_window}")

    @classmethod
    def from_config(cls, cfg: RefineConfig) -> RefineOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {name: getattr(cfg, name) for name in names}
        kw["free_limbs"] = tuple(kw["free_limbs"])
        return cls(**kw)


@struct.dataclass
class RefineWeights:
    """Traced numeric settings (scalars). Loss weights are those of PIPELINE.md 1.4 (all 1 in the paper)."""

    w_limb: Float[Array, ""]
    w_symm: Float[Array, ""]
    w_temporal: Float[Array, ""]
    w_data: Float[Array, ""]
    w_filled: Float[Array, ""]
    """Data-term weight of gap-filled joints (observed joints weigh 1)."""
    norm_eps: Float[Array, ""]
    """Charbonnier smoothing of the limb |.| (m)."""
    outlier_sigma: Float[Array, ""]
    """Limb-length outlier threshold in standard deviations (<= 0 disables); robust ones for outlier_stat="mad"."""
    outlier_mad_sigma: Float[Array, ""]
    """Limb-length outlier threshold in robust standard deviations (1.4826 MAD) for outlier_stat="mad"."""
    learning_rate: Float[Array, ""]
    """Adam step (m); unused by L-BFGS (line search)."""
    ftol: Float[Array, ""]
    """Stop when |f_prev - f| <= ftol * |f_prev| (0: run all iterations)."""

    @classmethod
    def from_config(cls, cfg: RefineConfig, dtype: jnp.dtype = jnp.float32) -> RefineWeights:
        return cls(**{f.name: jnp.asarray(getattr(cfg, f.name), dtype) for f in dataclasses.fields(cls)})

    def term_weights(self) -> Float[Array, "4"]:
        """[w_limb, w_symm, w_temporal, w_data] (losses.TERM_NAMES order)."""
        return jnp.stack([self.w_limb, self.w_symm, self.w_temporal, self.w_data])


@struct.dataclass
class RefineSummary:
    """Diagnostics of one refinement (leading batch axis when refining a batch)."""

    loss_history: Float[Array, "iters 4"]
    """Unweighted terms at the start of each iteration (row 0: the pre-processed sequence), columns in `term_names`
    order; after convergence the last values repeat."""
    total_history: Float[Array, "iters"]
    """Weighted objective at the start of each iteration."""
    final_terms: Float[Array, "4"]
    """Unweighted terms at the returned solution."""
    num_iters: Int[Array, ""]
    """Optimizer steps kept (<= iters)."""
    converged: Bool[Array, ""]
    """The ftol criterion stopped the loop (the last step changed the objective by <= ftol, relative)."""
    num_filled: Int[Array, ""]
    num_outliers: Int[Array, ""]
    term_names: tuple[str, ...] = struct.field(pytree_node=False, default=TERM_NAMES)


@struct.dataclass
class RefineResult:
    """Output of `refine` (frames >= the real length are absent)."""

    xyz: Float[Array, "frames people kpts 3"]
    """Refined positions (m); 0 where absent."""
    valid: Bool[Array, "frames people kpts"]
    """Has a value: observed or filled (FORMATS.md `joints3d[..., 3]`)."""
    filled: Bool[Array, "frames people kpts"]
    """Value comes from gap filling (missing or rejected input), not from the triangulation."""
    outlier: Bool[Array, "frames people kpts"]
    """Valid input rejected as a limb-length outlier (then refilled; filled is True there too)."""
    target: Float[Array, "frames people kpts 3"]
    """Pre-processed sequence (filled, smoothed): the optimization's start and data target."""
    summary: RefineSummary


def _stepsize_only(linesearch: optax.GradientTransformationExtraArgs) -> optax.GradientTransformationExtraArgs:
    """Run an Optax line search on stop-gradient inputs and apply its step size to the differentiable direction.

    Optax line searches loop with `lax.while_loop`, which has no reverse-mode rule. The search only chooses a
    scalar step size; treating it as a constant keeps the update y + eta * d differentiable through d (the L-BFGS
    direction), see the module docstring for when this is exact.
    """

    def init_fn(params):
        return linesearch.init(params)

    def update_fn(updates, state, params=None, *, value, grad, value_fn, **extra):
        sg = jax.lax.stop_gradient
        _, new_state = linesearch.update(
            sg(updates), state, sg(params), value=sg(value), grad=sg(grad), value_fn=value_fn, **extra
        )
        eta = sg(new_state.learning_rate)
        info = getattr(new_state, "info", None)
        if hasattr(info, "decrease_error"):
            # optax's backtracking returns its last trial even without sufficient decrease; take no step instead
            # (the objective never increases, and the loop stops on the unchanged value).
            eta = jnp.where(sg(info.decrease_error) > 0, 0.0, eta)
        return jax.tree.map(lambda u: (eta * u).astype(u.dtype), updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _make_optimizer(options: RefineOptions, learning_rate: Array) -> optax.GradientTransformationExtraArgs:
    if options.optimizer == "adam":
        # eps_root > 0: d sqrt(nu)/d nu is infinite at nu = 0 (joints with zero gradient), which would put NaNs in
        # reverse-mode gradients through the optimizer (optax docs on differentiating through adam).
        return optax.with_extra_args_support(optax.adam(learning_rate, eps_root=1e-16))
    if options.linesearch == "zoom":
        ls = optax.scale_by_zoom_linesearch(max_linesearch_steps=options.linesearch_steps, initial_guess_strategy="one")
    else:
        # Halving (not optax's default 0.8): 20 trials span 6 decades of step size. The unit first step of L-BFGS
        # (capped to |d| = 1 m) needs several decades on the stiff limb terms of short sequences.
        ls = optax.scale_by_backtracking_linesearch(max_backtracking_steps=options.linesearch_steps,
                                                    decrease_factor=0.5)
    # optax.lbfgs(...) is exactly chain(scale_by_lbfgs, scale(-1), linesearch); spelled out to wrap the search.
    return optax.chain(
        optax.scale_by_lbfgs(memory_size=options.memory_size),
        optax.scale(-1.0),
        _stepsize_only(ls),
    )


def _restart_lbfgs_on_bad_curvature(state, y: Array, grad: Array):
    """Reset the L-BFGS memory when the newest pair has no positive curvature (standard L-BFGS safeguard).

    The pair optax is about to store is (dw, du) = (y - y_prev, g - g_prev). A zoom (strong Wolfe) step guarantees
    <dw, du> > 0; a backtracking (Armijo) step does not, and a pair with <dw, du> <= eps |dw| |du| makes the inverse
    Hessian estimate indefinite or huge (directions, and their derivatives, blow up). optax stores every pair, so we
    restart instead: count 0 makes optax drop the pair and take a scaled gradient step, and zero weights (rho) make
    the two-loop recursion ignore the stored pairs (the pair arrays themselves need not be cleared).
    """
    lbfgs_state = state[0]
    dw, du = y - lbfgs_state.params, grad - lbfgs_state.updates
    curv = jnp.vdot(dw, du)
    eps = jnp.sqrt(jnp.finfo(y.dtype).eps)
    bad = (lbfgs_state.count > 0) & ~(curv > eps * jnp.sqrt(jnp.vdot(dw, dw) * jnp.vdot(du, du)))
    lbfgs_state = lbfgs_state._replace(
        count=jnp.where(bad, 0, lbfgs_state.count).astype(lbfgs_state.count.dtype),
        weights_memory=jnp.where(bad, 0.0, lbfgs_state.weights_memory).astype(lbfgs_state.weights_memory.dtype),
    )
    return (lbfgs_state,) + tuple(state[1:])


def _guard_lbfgs_state(state, y: Array, grad: Array, skip: Array):
    """Keep L-BFGS memory updates finite where their result is discarded.

    optax's `scale_by_lbfgs` computes `where(v == 0, 0, 1 / v)` with v = <dgrad, dparams>; at v = 0 the unused
    1 / v has an infinite derivative, so reverse-mode gradients become NaN even though the value is masked. v = 0
    happens on the first iteration (count 0, where optax masks the memory update anyway) of a sequence with a zero
    gradient and, under vmap (where `lax.cond` runs both branches), in the skipped step of a finished sequence.
    Shifting the stored params / gradient there makes v != 0 without changing any used value.
    """
    lbfgs_state = state[0]
    lbfgs_state = lbfgs_state._replace(
        params=jnp.where(skip, y + 1.0, lbfgs_state.params),
        updates=jnp.where(skip, grad + 1.0, lbfgs_state.updates),
    )
    return (lbfgs_state,) + tuple(state[1:])


def _first_step_scale_correction(grad: Array, first: Array) -> Array:
    """1 in value; restores the derivative of L-BFGS's first-step scaling that optax computes under stop_gradient.

    optax's `scale_by_lbfgs` scales its first direction (count 0: the first iteration or after a restart) by
    s = min(1, 1 / ||g||) with g stop-gradiented, so the
    unrolled derivative would miss ds. Multiplying the update by s / stop_gradient(s) changes no value (exactly 1)
    and adds exactly the missing term: d(c * sg(s) * d) = ds * d + s * dd. Later iterations use the differentiable
    secant scaling. NaN-safe: s = 1 (constant) where ||g|| <= 1.
    """
    sq = jnp.sum(grad * grad)
    big = sq > 1.0
    s = jnp.where(big, jax.lax.rsqrt(jnp.where(big, sq, 1.0)), 1.0)
    return jnp.where(first, s / jax.lax.stop_gradient(s), 1.0).astype(grad.dtype)


def _optimize(y0: Array, obs: RefineObs, weights: RefineWeights, options: RefineOptions):
    """Run `options.iters` optimizer iterations (skipping those after convergence) from y0.

    Returns (y, history [iters, 4], totals [iters], final_terms [4], num_iters, converged); history[i] holds the
    terms at the start of iteration i (history[0]: the pre-processed sequence).
    """
    w = weights.term_weights()
    obs_sg, w_sg = jax.lax.stop_gradient((obs, w))

    def fun_aux(y):
        terms = loss_terms(y, obs)
        return jnp.dot(w, terms), terms

    fun_sg = lambda y: jnp.dot(w_sg, loss_terms(y, obs_sg))
    opt = _make_optimizer(options, weights.learning_rate)
    tiny = jnp.finfo(y0.dtype).tiny

    def step(y, state, f_prev, terms_prev, done, first):
        (value, terms), grad = jax.value_and_grad(fun_aux, has_aux=True)(y)
        if options.optimizer == "lbfgs":
            state = _restart_lbfgs_on_bad_curvature(state, y, grad)
            restart = state[0].count == 0
            state = _guard_lbfgs_state(state, y, grad, done | restart)
        updates, state = opt.update(grad, state, y, value=value, grad=grad, value_fn=fun_sg)
        if options.optimizer == "lbfgs":
            updates = updates * _first_step_scale_correction(grad, restart)
        # Nothing to optimize (e.g. an all-invalid padded sequence): no step, so the loop stops next iteration.
        moving = jnp.any(grad != 0)
        y_new = jnp.where(moving, optax.apply_updates(y, updates), y)
        return y_new, state, value, terms

    def skip(y, state, f_prev, terms_prev, done, first):
        return y, state, f_prev, terms_prev

    def body(carry, i):
        y, y_prev, state, f_prev, terms_prev, done = carry
        first = i == 0
        y_new, state, f_cur, terms = jax.lax.cond(done, skip, step, y, state, f_prev, terms_prev, done, first)
        # f_cur is the objective at y (start of this iteration). A non-finite value (divergence) rejects the last
        # step: back to y_prev and stop. Otherwise stop once the last step decreased f by <= ftol (relative).
        finite = jnp.isfinite(f_cur)
        small = ~first & (jnp.abs(f_prev - f_cur) <= weights.ftol * jnp.maximum(jnp.abs(f_prev), tiny))
        stop = ~done & (small | ~finite)
        y_out = jnp.where(finite, jnp.where(stop, y, y_new), y_prev)
        terms = jnp.where(finite, terms, terms_prev)
        f_cur = jnp.where(finite, f_cur, f_prev)
        # Steps kept: this iteration's unless it stopped; a divergence also discards the previous one.
        taken = jnp.where(~done & ~finite, -1, (~done & ~stop).astype(jnp.int32))
        return (y_out, y, state, f_cur, terms, done | stop), (terms, f_cur, taken)

    f_init = jnp.zeros((), y0.dtype)
    terms_init = jnp.zeros((len(TERM_NAMES),), y0.dtype)
    carry0 = (y0, y0, opt.init(y0), f_init, terms_init, jnp.zeros((), bool))
    (y, _, _, _, _, done), (history, totals, taken) = jax.lax.scan(body, carry0, jnp.arange(options.iters))
    final_terms = loss_terms(y, obs)
    return y, history, totals, final_terms, jnp.sum(taken), done


def _symmetric_targets(target: Float[Array, "people limbs"], valid: Bool[Array, "people limbs"]) -> Array:
    """Left and right limbs of a symmetric pair get the mean of their two median lengths (when both exist).

    Separate medians differ by their noise, and then L_limb ("median") and L_symm disagree: each keeps a constant
    residual the other term pays for. One shared target per pair makes the two terms consistent.
    """
    left, right = SYMMETRIC_PAIRS[:, 0], SYMMETRIC_PAIRS[:, 1]
    both = valid[:, left] & valid[:, right]
    mean = 0.5 * (target[:, left] + target[:, right])
    target = target.at[:, left].set(jnp.where(both, mean, target[:, left]))
    return target.at[:, right].set(jnp.where(both, mean, target[:, right]))


def _refine_one(xyz, valid, weights: RefineWeights, options: RefineOptions, frame_mask) -> RefineResult:
    frames = xyz.shape[0]
    # The sequence ends at the last real frame (padding follows it); a masked frame before that end is treated as a
    # frame without observations (gap-filled like any missing joint).
    num_frames = jnp.max(jnp.where(frame_mask, jnp.arange(1, frames + 1), 0)).astype(jnp.int32)
    valid = valid & frame_mask[:, None, None]
    sigma = weights.outlier_mad_sigma if options.outlier_stat == "mad" else weights.outlier_sigma
    pre = preprocess(
        xyz, valid, num_frames, sigma,
        window=options.interp_window, order=options.interp_order, long_gap=options.long_gap,
        savgol_window=options.savgol_window, savgol_order=options.savgol_order, outlier_stat=options.outlier_stat,
    )
    filled = pre.present & ~pre.observed
    dtype = xyz.dtype
    data_weight = jnp.where(pre.observed, 1.0, jnp.where(filled, weights.w_filled, 0.0)).astype(dtype)
    # "median" limb targets from the raw triangulation (observed joints only), robust to the remaining outliers.
    raw = jnp.where(pre.observed[..., None], xyz, 0.0)
    limb_target, limb_target_valid = masked_median(limb_lengths(raw), limb_presence(pre.observed))
    limb_target = _symmetric_targets(limb_target, limb_target_valid)
    obs = make_obs(
        pre.xyz, data_weight, pre.present, limb_target, limb_target_valid, num_frames.astype(dtype), weights.norm_eps,
        limb_mode=options.limb_mode, temporal_penalty=options.temporal_penalty,
        free_limbs=options.free_limbs,
    )
    y, history, totals, final_terms, n_iter, converged = _optimize(pre.xyz, obs, weights, options)
    y = jnp.where(pre.present[..., None], y, 0.0)
    summary = RefineSummary(
        loss_history=history, total_history=totals, final_terms=final_terms, num_iters=n_iter, converged=converged,
        num_filled=jnp.sum(filled).astype(jnp.int32), num_outliers=jnp.sum(pre.outlier).astype(jnp.int32),
    )
    return RefineResult(xyz=y, valid=pre.present, filled=filled, outlier=pre.outlier, target=pre.xyz, summary=summary)


@functools.partial(jax.jit, static_argnames=("options",))
def refine(
    xyz: Float[Array, "*batch frames people kpts 3"],
    valid: Bool[Array, "*batch frames people kpts"],
    weights: RefineWeights,
    options: RefineOptions = RefineOptions(),
    frame_mask: Bool[Array, "*batch frames"] | None = None,
) -> RefineResult:
    """Refine COCO-17 3D keypoint sequences (see module docstring).

    Args:
      xyz: triangulated keypoints (m), f[F, P, 17, 3] or a batch f[B, F, P, 17, 3]; values where `valid` is False
        are ignored (NaN allowed).
      valid: b[F, P, 17] (or [B, F, P, 17]) triangulation succeeded.
      weights: traced numeric settings (`RefineWeights.from_config(cfg)`); cast to xyz's dtype.
      options: static settings (`RefineOptions.from_config(cfg)`).
      frame_mask: b[F] (or [B, F]) real frames, padding at the end (a False frame before the last True one is a
        frame without observations); None = all real.

    Returns:
      RefineResult (fields batched like the input).
    """
    if xyz.ndim not in (4, 5) or xyz.shape[-1] != 3 or xyz.shape[-2] != NUM_KPTS:
        raise H4DError(f"refine: xyz must be [(B,) F, P, {NUM_KPTS}, 3], got {xyz.shape}")
    if valid.shape != xyz.shape[:-1]:
        raise H4DError(f"refine: valid must be {xyz.shape[:-1]} (xyz without the last axis), got {valid.shape}")
    batch_shape = xyz.shape[:-4] + xyz.shape[-4:-3]  # (B, F) or (F,)
    if frame_mask is None:
        frame_mask = jnp.ones(batch_shape, bool)
    if frame_mask.shape != batch_shape:
        raise H4DError(f"refine: frame_mask must be {batch_shape}, got {frame_mask.shape}")
    dtype = xyz.dtype if jnp.issubdtype(xyz.dtype, jnp.floating) else jnp.float32
    xyz = xyz.astype(dtype)
    weights = jax.tree.map(lambda a: jnp.asarray(a, dtype), weights)
    valid = valid.astype(bool)
    frame_mask = frame_mask.astype(bool)
    run = functools.partial(_refine_one, weights=weights, options=options)
    if xyz.ndim == 5:
        return jax.vmap(lambda x, v, m: run(x, v, frame_mask=m))(xyz, valid, frame_mask)
    return run(xyz, valid, frame_mask=frame_mask)


def refine_keypoints(
    xyz: np.ndarray | Array,
    valid: np.ndarray | Array,
    config: RefineConfig | None = None,
    frame_mask: np.ndarray | Array | None = None,
) -> RefineResult:
    """Host convenience: split a RefineConfig into traced weights and static options, then `refine` (float32)."""
    config = config or RefineConfig()
    return refine(
        jnp.asarray(xyz, jnp.float32), jnp.asarray(valid, bool), RefineWeights.from_config(config),
        RefineOptions.from_config(config), None if frame_mask is None else jnp.asarray(frame_mask, bool),
    )
