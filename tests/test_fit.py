"""Body fit: recovery of known parameters, no recompilation when weights change, hypergradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.body.keypoints import coco_fit_points
from h4djax.body.lbs import smpl_joints_keypoints_batch
from h4djax.body.model import SmplParams
from h4djax.config import FitConfig, StageConfig
from h4djax.fit.fit import fit_batch, fit_sequence, stages_from_config
from h4djax.fit.init import init_params
from h4djax.geometry.rotations import axis_angle_to_matrix
from toy_body import toy_body_model


def _sequence(model, F=24, P=2, seed=1, amp=0.25):
    """Smooth ground-truth motion of P people (people-major params) and their COCO-17 points [F,P,17,3]."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, np.pi, F)
    go = np.zeros((P, F, 3))
    go[..., 1] = 0.3 * np.sin(t)[None] + np.arange(P)[:, None] * np.pi
    bp = amp * np.sin(t[None, :, None] + rng.uniform(0, 6, (P, 1, 69))) * rng.uniform(0, 1, (P, 1, 69))
    tr = np.stack([0.3 * np.sin(t)[None] + 0.6 * np.arange(P)[:, None], 0.9 + 0 * t[None] + 0 * np.arange(P)[:, None],
                   0.1 * t[None] + 0 * np.arange(P)[:, None]], -1)
    dt = model.dtype
    gt = SmplParams(global_orient=jnp.asarray(go, dt), body_pose=jnp.asarray(bp, dt),
                    betas=jnp.asarray(rng.normal(size=(P, 10)) * 0.5, dt), transl=jnp.asarray(tr, dt))
    pts = coco_fit_points(model, smpl_joints_keypoints_batch(model, gt))
    return gt, jnp.swapaxes(pts, 0, 1)


def _no_collision(cfg: FitConfig) -> FitConfig:
    return dataclasses.replace(cfg, stages=tuple(dataclasses.replace(s, w_collision=0.0) for s in cfg.stages))


@pytest.fixture(scope="module")
def model():
    return toy_body_model(dtype=np.float32)


def test_init_recovers_global_pose(model):
    gt, kp = _sequence(model, F=8, P=2, amp=0.0)  # rest body pose: init must be (near) exact for root + limbs
    init = jax.jit(init_params)(model, kp, jnp.ones(kp.shape[:3], bool))
    Rg = axis_angle_to_matrix(jnp.swapaxes(gt.global_orient, 0, 1))
    Ri = axis_angle_to_matrix(init.global_orient)
    ang = np.degrees(np.arccos(np.clip((np.trace(np.swapaxes(np.asarray(Rg), -1, -2) @ np.asarray(Ri), axis1=-2,
                                                axis2=-1) - 1) / 2, -1, 1)))
    assert ang.max() < 1.0
    params_pm = SmplParams(global_orient=jnp.swapaxes(init.global_orient, 0, 1),
                           body_pose=jnp.swapaxes(init.body_pose, 0, 1), betas=init.betas,
                           transl=jnp.swapaxes(init.transl, 0, 1))
    pts = jnp.swapaxes(coco_fit_points(model, smpl_joints_keypoints_batch(model, params_pm)), 0, 1)
    err = np.linalg.norm(np.asarray(pts - kp), axis=-1)
    assert err.mean() < 0.02, err.mean()


def test_fit_recovers_motion_and_reduces_loss(model):
    gt, kp = _sequence(model)
    cfg = _no_collision(FitConfig(epochs=2))
    specs, weights = stages_from_config(cfg)
    params, summary = fit_sequence(model, kp, jnp.ones(kp.shape[:3]), specs, weights, cfg.epochs)
    pm = SmplParams(global_orient=jnp.swapaxes(params.global_orient, 0, 1),
                    body_pose=jnp.swapaxes(params.body_pose, 0, 1), betas=params.betas,
                    transl=jnp.swapaxes(params.transl, 0, 1))
    pts = jnp.swapaxes(coco_fit_points(model, smpl_joints_keypoints_batch(model, pm)), 0, 1)
    mpjpe = float(np.linalg.norm(np.asarray(pts - kp), axis=-1).mean())
    assert mpjpe < 0.01, mpjpe  # < 1 cm on noise-free keypoints of the same model
    pose_total = np.asarray(summary.total[2])
    assert pose_total[-1, -1] < 0.2 * pose_total[0, 0]
    assert summary.history[2].shape == (cfg.epochs, cfg.stages[2].iters, 7)


def test_no_recompile_when_weights_change(model):
    _, kp = _sequence(model, F=6, P=1)
    cfg = FitConfig(epochs=1, stages=(StageConfig(name="g", free=("global_orient", "transl"), iters=3, w_joint=1.0),))
    specs, weights = stages_from_config(cfg)
    args = (model, kp[None], jnp.ones(kp.shape[:3])[None], jnp.ones((1, kp.shape[0])))
    fit_batch(*args, weights, specs=specs, epochs=1, collision_fn=None)
    n0 = fit_batch._cache_size()
    w2 = tuple(w.replace(w_joint=jnp.asarray(3.0, jnp.float32), learning_rate=jnp.asarray(0.01, jnp.float32))
               for w in weights)
    fit_batch(*args, w2, specs=specs, epochs=1, collision_fn=None)
    kp2 = kp + 0.01
    fit_batch(model, kp2[None], *args[2:], w2, specs=specs, epochs=1, collision_fn=None)
    assert fit_batch._cache_size() == n0


def test_hypergradient_wrt_loss_weight_matches_finite_differences():
    jax.config.update("jax_enable_x64", True)
    try:
        model = toy_body_model(dtype=np.float64)
        gt, kp = _sequence(model, F=5, P=1)
        noisy = kp + 0.01 * jnp.asarray(np.random.default_rng(3).normal(size=kp.shape))
        cfg = FitConfig(epochs=1, stages=(
            StageConfig(name="g", free=("global_orient", "transl"), iters=5, w_joint=1.0, learning_rate=0.05),
            StageConfig(name="p", free=("body_pose",), iters=5, w_joint=10.0, w_temporal=1.0, w_reg=0.001,
                        learning_rate=0.02),
        ))
        specs, weights = stages_from_config(cfg)
        weights = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), weights)

        def metric(w_temporal):
            ws = (weights[0], weights[1].replace(w_temporal=w_temporal))
            params, _ = fit_sequence(model, noisy, jnp.ones(kp.shape[:3]), specs, ws, 1)
            pm = SmplParams(global_orient=jnp.swapaxes(params.global_orient, 0, 1),
                            body_pose=jnp.swapaxes(params.body_pose, 0, 1), betas=params.betas,
                            transl=jnp.swapaxes(params.transl, 0, 1))
            pts = jnp.swapaxes(coco_fit_points(model, smpl_joints_keypoints_batch(model, pm)), 0, 1)
            return jnp.mean(jnp.sum((pts - kp) ** 2, -1))

        w0 = jnp.asarray(1.0, jnp.float64)
        metric = jax.jit(metric)
        g = jax.jit(jax.grad(metric))(w0)
        h = 1e-4
        fd = (metric(w0 + h) - metric(w0 - h)) / (2 * h)
        assert np.isfinite(g)
        np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-10)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_gradient_wrt_keypoints_through_init_and_a_stage_at_its_optimum():
    """jax.grad of the fitted parameters w.r.t. the keypoints matches finite differences (float64).

    Regression for two faults that made the pipeline's d metric / d keypoint -1.7e6 instead of 0.14: the analytic
    init was under stop_gradient (3 Adam steps do not forget their start, so its dependence on the keypoints is
    most of the derivative), and the torso-only global stage, which the Kabsch init already solves exactly on the
    toy model, turned its round-off gradient into lr-sized Adam steps in random directions.
    """
    jax.config.update("jax_enable_x64", True)
    try:
        model = toy_body_model(dtype=np.float64)
        _, kp = _sequence(model, F=3, P=1)
        noisy = kp + 0.01 * jnp.asarray(np.random.default_rng(3).normal(size=kp.shape))
        # One stage (compile time): it keeps the init, so u . params covers every init output (betas and body pose
        # from the limb lengths and bone directions, orientation and translation from Kabsch).
        cfg = FitConfig(epochs=1, stages=(
            StageConfig(name="g", free=("global_orient", "transl"), iters=3, w_joint=1.0, joints="torso"),))
        specs, weights = stages_from_config(cfg)
        weights = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), weights)
        u = jnp.asarray(np.random.default_rng(4).normal(size=3 * (3 + 69 + 3) + 10))

        def scalar(x):
            params, summary = fit_sequence(model, x, jnp.ones(kp.shape[:3]), specs, weights, 1)
            flat = jnp.concatenate([params.global_orient.ravel(), params.body_pose.ravel(), params.transl.ravel(),
                                    params.betas.ravel()])
            return jnp.dot(u, flat), summary.total[0]

        # One compiled program for the gradient and the finite differences (its value output); LLVM -O0 only
        # changes code generation (a third less compile time on this tiny problem).
        value_and_grad = jax.jit(jax.value_and_grad(scalar, has_aux=True),
                                 compiler_options={"xla_backend_optimization_level": 0})
        (_, stage1), g = value_and_grad(noisy)
        assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
        # The global stage starts at its optimum and stays there (it used to jump by lr on round-off).
        assert np.ptp(np.asarray(stage1)) <= 1e-9 * float(stage1[0, 0])
        d = jnp.asarray(np.random.default_rng(5).normal(size=kp.shape))
        an = float(jnp.sum(g * d))
        # Adam's first step is lr * sign(g): piecewise smooth, so small steps; two of them must agree.
        fd = [(value_and_grad(noisy + h * d)[0][0] - value_and_grad(noisy - h * d)[0][0]) / (2 * h)
              for h in (1e-6, 1e-7)]
        np.testing.assert_allclose(fd[0], fd[1], rtol=1e-5)
        np.testing.assert_allclose(an, fd[0], rtol=1e-5)
    finally:
        jax.config.update("jax_enable_x64", False)
