"""A small registry of pipeline stages for `h4d demo` (and any driver that wants "run whatever exists").

A `Stage` is a name, the module it needs (import-guarded: a stage whose module is missing or incomplete is
reported as unavailable, not as a crash), the result arrays it needs from earlier stages, and a `run(ctx)` that
returns FORMATS.md result arrays (`joints3d_triangulated`, `joints3d`, `global_orient` ...). Stages run in
registration order; each one sees what the earlier ones produced in `ctx.result`.

Later stages plug in with `register_stage(Stage(...))` (replacing one of the same name), e.g. from the module that
implements them, without touching the demo. The built-in adapters call the public host conveniences of
`h4djax.triangulate`, `h4djax.refine` and `h4djax.fit` (or `h4djax.pipeline` where it provides them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Stage", "StageContext", "register_stage", "registered_stages", "resolve_stages"]


@dataclass
class StageContext:
    """What a stage sees: the capture (h4djax.io.capture.Capture), the engine Config, a lazily loaded body model,
    the result arrays so far, and a free-form `info` dict per stage (losses, counts) for the report."""

    capture: object
    config: object
    result: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    _body_model: object | None = None

    @property
    def body_model(self):
        if self._body_model is None:
            from h4djax.body import load_body_model

            self._body_model = load_body_model()
        return self._body_model


@dataclass(frozen=True)
class Stage:
    """One pipeline stage. `module` is imported before running (missing -> unavailable); `needs` are result keys
    earlier stages must have produced; `run(ctx)` returns new result arrays (numpy)."""

    name: str
    module: str
    run: Callable[[StageContext], dict[str, np.ndarray]]
    needs: tuple[str, ...] = ()
    description: str = ""


_REGISTRY: dict[str, Stage] = {}


def register_stage(stage: Stage) -> None:
    """Add `stage` (or replace the stage of the same name, keeping its position)."""
    _REGISTRY[stage.name] = stage


def registered_stages() -> list[Stage]:
    return list(_REGISTRY.values())


def resolve_stages() -> list[tuple[Stage, bool, str]]:
    """Each registered stage with whether it can run here and, if not, why (the import error)."""
    out = []
    for st in _REGISTRY.values():
        try:
            importlib.import_module(st.module)
            out.append((st, True, ""))
        except ImportError as e:  # a stage still being written, or an optional dependency missing
            out.append((st, False, f"{type(e).__name__}: {e}"))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Built-in adapters
# ---------------------------------------------------------------------------------------------------------------


def _triangulate(ctx: StageContext) -> dict[str, np.ndarray]:
    import jax.numpy as jnp

    from h4djax.geometry import to_jax
    from h4djax.triangulate import filter_with_config, to_joints3d, triangulate_with_config

    kp = jnp.asarray(ctx.capture.keypoints, jnp.float32)
    filt = filter_with_config(kp, ctx.config.filter)
    tri = triangulate_with_config(to_jax(ctx.capture.cameras), filt.keypoints, ctx.config.triangulation)
    j = np.asarray(to_joints3d(tri))
    ctx.info["triangulate"] = {"poses_dropped_pct": round(100.0 * float(1 - np.mean(np.asarray(filt.pose_valid))), 2),
                               "valid_pct": round(100.0 * float(np.mean(j[..., 3] > 0.5)), 2)}
    return {"joints3d_triangulated": j}


def _refine(ctx: StageContext) -> dict[str, np.ndarray]:
    from h4djax.refine import refine_keypoints

    tri = ctx.result["joints3d_triangulated"]
    valid = tri[..., 3] > 0.5
    xyz = np.where(valid[..., None], tri[..., :3], 0.0)
    res = refine_keypoints(xyz, valid, ctx.config.refine)
    out_xyz = np.asarray(res.xyz)
    ok = np.all(np.isfinite(out_xyz), -1)
    ctx.info["refine"] = {"filled": int(np.asarray(res.summary.num_filled)),
                          "outliers": int(np.asarray(res.summary.num_outliers))}
    return {"joints3d": np.concatenate([np.where(ok[..., None], out_xyz, 0.0), ok[..., None].astype(out_xyz.dtype)],
                                       -1)}


def _fit(ctx: StageContext) -> dict[str, np.ndarray]:
    import jax.numpy as jnp

    pipeline = None
    try:
        pipeline = importlib.import_module("h4djax.pipeline")
    except ImportError:
        pass
    src = ctx.result["joints3d"]
    if pipeline is not None and hasattr(pipeline, "fit_stage"):
        return pipeline.fit_stage(ctx.body_model, src, ctx.config)
    from h4djax.body import SmplParams, smpl_forward_batch
    from h4djax.body.keypoints import COCO17_NAMES
    from h4djax.fit.fit import fit_sequence, stages_from_config

    model = ctx.body_model
    cfg = ctx.config.fit
    # Without a collision term implementation the stage-3 collision weight is switched off (reported).
    stages = tuple(s if s.w_collision == 0 else type(s)(**{**s.__dict__, "w_collision": 0.0}) for s in cfg.stages)
    specs, weights = stages_from_config(type(cfg)(epochs=cfg.epochs, stages=stages))
    kp = jnp.asarray(src[..., :3], jnp.float32)
    w = jnp.asarray(src[..., 3], jnp.float32)
    params, summary = _fit_jit(model, kp, w, specs, weights, cfg.epochs)
    go, bp = np.asarray(params.global_orient), np.asarray(params.body_pose)
    betas, tr = np.asarray(params.betas), np.asarray(params.transl)
    out = smpl_forward_batch(model, SmplParams(global_orient=jnp.asarray(go), body_pose=jnp.asarray(bp),
                                               betas=jnp.broadcast_to(jnp.asarray(betas)[None], go.shape[:2]
                                                                      + betas.shape[-1:]),
                                               transl=jnp.asarray(tr)))
    names = list(model.kpt_names)
    idx = [names.index(n) for n in COCO17_NAMES]
    ctx.info["fit"] = {"final_loss": round(float(np.asarray(summary.total[-1])[-1, -1]), 6),
                       "collision": "off (no collision term available to the demo adapter)"}
    return {"global_orient": go, "body_pose": bp, "betas": betas, "transl": tr,
            "smpl_joints": np.asarray(out.joints), "keypoints3d": np.asarray(out.keypoints)[..., idx, :]}


def _fit_jit(model, kp, w, specs, weights, epochs):
    import jax

    from h4djax.fit.fit import fit_sequence

    fn = jax.jit(lambda m, k, ww, wts: fit_sequence(m, k, ww, specs, wts, epochs))
    return fn(model, kp, w, weights)


register_stage(Stage("triangulate", "h4djax.triangulate", _triangulate, (),
                     "2D filtering + robust triangulation (PIPELINE.md 1.2-1.3)"))
register_stage(Stage("refine", "h4djax.refine", _refine, ("joints3d_triangulated",),
                     "whole-sequence 3D refinement (PIPELINE.md 1.4)"))
register_stage(Stage("fit", "h4djax.fit.fit", _fit, ("joints3d",), "three-stage body fit (PIPELINE.md 1.5)"))
