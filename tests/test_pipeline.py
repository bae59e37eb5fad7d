"""The whole chain (filter -> triangulate -> refine -> fit) as one jitted program, and `h4d fit` end to end."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.body.lbs import smpl_joints_keypoints_batch
from h4djax.body.model import SmplParams
from h4djax.config import Config, FitConfig, RefineConfig, StageConfig
from h4djax.fit.fit import model_points
from h4djax.geometry.cameras import from_numpy, project
from h4djax.pipeline import pipeline_from_config, run_pipeline
from h4djax.synth.config import RigConfig
from h4djax.synth.rig import make_rig
from toy_body import toy_body_model


def _small_config(iters: int = 4) -> Config:
    stages = (
        StageConfig(name="global", free=("global_orient", "transl"), iters=iters, w_joint=1.0, joints="torso"),
        StageConfig(name="shape", free=("betas",), iters=iters, w_limb=1.0, w_symm=0.2, w_beta=0.005),
        StageConfig(name="pose", free=("global_orient", "transl", "body_pose"), iters=iters, learning_rate=0.02,
                    w_joint=10.0, w_reg=0.001, w_limb=1.0, w_temporal=1.0),
    )
    return Config(refine=RefineConfig(iters=iters), fit=FitConfig(epochs=1, stages=stages))


def _scene(model, num_cams=4, F=6, P=2, seed=0):
    """A ring rig and two people of `model` moving slowly; returns (cams, keypoints2d [F,C,P,17,3], gt [F,P,17,3])."""
    rng = np.random.default_rng(seed)
    host = make_rig(dataclasses.replace(RigConfig(), num_cameras=num_cams, fisheye_fraction=0.5), rng)
    dt = model.dtype
    t = np.linspace(0, 0.5, F)
    go = np.zeros((P, F, 3)); go[..., 1] = np.arange(P)[:, None] * np.pi + 0.2 * t[None]
    bp = 0.2 * np.sin(t[None, :, None] + rng.uniform(0, 6, (P, 1, 69)))
    tr = np.stack([np.arange(P)[:, None] * 0.8 - 0.4 + 0 * t, 0.9 + 0 * t[None] + 0 * np.arange(P)[:, None],
                   0.1 * t[None] + 0 * np.arange(P)[:, None]], -1)
    gt = SmplParams(global_orient=jnp.asarray(go, dt), body_pose=jnp.asarray(bp, dt),
                    betas=jnp.asarray(rng.normal(size=(P, 10)) * 0.3, dt), transl=jnp.asarray(tr, dt))
    pts = jnp.swapaxes(model_points(model, smpl_joints_keypoints_batch(model, gt), "regressor"), 0, 1)
    cams = from_numpy(host.K, host.dist, host.R, host.t, host.size, host.fisheye, host.names, dtype=dt)
    uv, front = project(cams, pts)  # [C,F,P,17,2]
    kp = jnp.concatenate([uv, front[..., None].astype(dt)], -1)
    return cams, jnp.moveaxis(kp, 0, 1), pts


def test_pipeline_recovers_noise_free_motion_and_does_not_recompile():
    model = toy_body_model(dtype=np.float32)
    cams, kp, gt = _scene(model)
    cfg = _small_config(iters=30)
    weights, options = pipeline_from_config(cfg, model)
    out = run_pipeline(model, cams, kp, weights, options)
    tri_err = np.linalg.norm(np.asarray(out.triangulation.xyz) - np.asarray(gt), axis=-1)
    assert np.asarray(out.triangulation.valid).all()
    assert tri_err.max() < 1e-3  # float32 exact recovery
    pm = SmplParams(global_orient=jnp.swapaxes(out.params.global_orient, 0, 1),
                    body_pose=jnp.swapaxes(out.params.body_pose, 0, 1), betas=out.params.betas,
                    transl=jnp.swapaxes(out.params.transl, 0, 1))
    fitted = jnp.swapaxes(model_points(model, smpl_joints_keypoints_batch(model, pm), "regressor"), 0, 1)
    assert np.linalg.norm(np.asarray(fitted - gt), axis=-1).mean() < 0.03
    n = run_pipeline._cache_size()
    # Another sequence of the same length and new weights: same program.
    w2 = weights.replace(fit=tuple(w.replace(w_joint=w.w_joint * 2) for w in weights.fit),
                         refine=weights.refine.replace(w_temporal=jnp.asarray(0.5, jnp.float32)))
    run_pipeline(model, cams, kp + 0.5, w2, options)
    assert run_pipeline._cache_size() == n


def test_pipeline_gradients_wrt_keypoints_cameras_and_weights():
    """jax.grad through filter -> triangulate -> refine -> fit (float64): finite w.r.t. keypoints and cameras, and
    equal to central differences w.r.t. a fit loss weight and one pixel coordinate of the whole chain.

    Sized for compile time (the chain's reverse mode is one large program): 3 frames, 2 Adam refinement steps,
    one fit stage, one compiled value_and_grad that also gives every finite-difference value, and LLVM at -O0
    (only code generation: ~35% less compile time, same arithmetic). The fit's own start-at-optimum stage and
    init derivative are tested in test_fit.py. Adam's first step is lr * sign(g), so the chain is only piecewise
    smooth: two step sizes must agree before the comparison means anything.
    """
    jax.config.update("jax_enable_x64", True)
    try:
        model = toy_body_model(dtype=np.float64)
        cams, kp, gt = _scene(model, F=3, P=1)
        kp = kp + jnp.asarray(np.random.default_rng(1).normal(scale=0.5, size=kp.shape)) * jnp.array([1, 1, 0])
        stage = StageConfig(name="pose", free=("global_orient", "transl", "body_pose"), iters=3, learning_rate=0.02,
                            w_joint=10.0, w_reg=0.001, w_limb=1.0, w_temporal=1.0)
        cfg = Config(refine=RefineConfig(iters=2, optimizer="adam"), fit=FitConfig(epochs=1, stages=(stage,)))
        weights, options = pipeline_from_config(cfg, model)
        weights = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating)
                               else x, weights)

        def metric(kp_, cams_, w_temporal):
            w = weights.replace(fit=(weights.fit[0].replace(w_temporal=w_temporal),))
            out = run_pipeline(model, cams_, kp_, w, options)
            pm = SmplParams(global_orient=jnp.swapaxes(out.params.global_orient, 0, 1),
                            body_pose=jnp.swapaxes(out.params.body_pose, 0, 1), betas=out.params.betas,
                            transl=jnp.swapaxes(out.params.transl, 0, 1))
            pts = jnp.swapaxes(model_points(model, smpl_joints_keypoints_batch(model, pm), "regressor"), 0, 1)
            return jnp.mean(jnp.sum((pts - gt) ** 2, -1))

        value_and_grad = jax.jit(jax.value_and_grad(metric, argnums=(0, 1, 2), allow_int=True),
                                 compiler_options={"xla_backend_optimization_level": 0})
        m = lambda *a: float(value_and_grad(*a)[0])  # noqa: E731
        w0 = jnp.asarray(1.0, jnp.float64)
        _, (g_kp, g_cam, g_w) = value_and_grad(kp, cams, w0)
        assert np.all(np.isfinite(np.asarray(g_kp))) and np.abs(np.asarray(g_kp[..., :2])).max() > 0
        for leaf in (g_cam.K, g_cam.R, g_cam.t, g_cam.dist):
            assert np.all(np.isfinite(np.asarray(leaf)))
        assert np.abs(np.asarray(g_cam.t)).max() > 0
        fd_w = [(m(kp, cams, w0 + h) - m(kp, cams, w0 - h)) / (2 * h) for h in (1e-3, 1e-4)]
        np.testing.assert_allclose(fd_w[0], fd_w[1], rtol=1e-4)
        np.testing.assert_allclose(g_w, fd_w[1], rtol=1e-4, atol=1e-14)
        # One pixel coordinate, through triangulation, refinement, the fit's init and its Adam steps.
        e = jnp.zeros_like(kp).at[1, 2, 0, 5, 0].set(1.0)
        fd_kp = [(m(kp + h * e, cams, w0) - m(kp - h * e, cams, w0)) / (2 * h) for h in (1e-3, 1e-4)]
        np.testing.assert_allclose(fd_kp[0], fd_kp[1], rtol=1e-4)
        np.testing.assert_allclose(g_kp[1, 2, 0, 5, 0], fd_kp[1], rtol=1e-4, atol=1e-14)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("bad", ["nan", "missing_camera"])
def test_fit_capture_bad_input(tmp_path, bad):
    from h4djax.errors import CaptureError
    from h4djax.io.capture import Capture
    from h4djax.pipeline import fit_capture

    model = toy_body_model(dtype=np.float32)
    cams, kp, _ = _scene(model, F=3)
    from h4djax.geometry.cameras import to_numpy

    kp = np.array(kp, np.float32)
    cap = Capture(cameras=to_numpy(cams), keypoints=kp)
    if bad == "nan":
        kp[0, 0, 0, :5] = np.nan  # NaN keypoints are missing, never NaN in the output
        fit = fit_capture(dataclasses.replace(cap, keypoints=kp), _small_config(2), model, progress=False)
        for name in ("joints3d_triangulated", "joints3d", "body_pose", "keypoints3d"):
            assert np.all(np.isfinite(getattr(fit.result, name))), name
    else:
        with pytest.raises(CaptureError, match="unknown camera"):
            fit_capture(cap, _small_config(2), model, cameras=["cam01", "nope"], progress=False)
