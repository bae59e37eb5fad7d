"""A small registry of pipeline stages for `h4d demo` (and any driver that wants "run whatever exists").

A `Stage` is a name, the modules it needs (import-guarded: a stage whose module is missing or still incomplete is
reported as unavailable, not as a crash), the stages it needs before it, and a `run(ctx)` that returns FORMATS.md
result arrays (`joints3d_triangulated`, `joints3d`, `keypoints3d`, `global_orient` ...) and may leave intermediate
objects in `ctx.state` for later stages. Stages run in registration order.

A later stage plugs in with `register_stage(Stage(...))` (or replaces one of the same name), e.g. from the module
that implements it, without touching the demo; anything its `run` returns under a `STAGE_KEYS` name of
`h4djax.eval.report` is scored against the ground truth as soon as it has run. The built-in stages call the jitted
stage functions of `h4djax.pipeline` (the same ones `h4d fit` uses), so the demo measures the real engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Stage", "StageContext", "register_stage", "registered_stages", "resolve_stages", "run_stages"]


@dataclass
class StageContext:
    """What a stage sees: the capture (`h4djax.io.capture.Capture`), the engine `Config`, the body model, the
    FORMATS.md result arrays so far, intermediate objects (`state`, by name) and per-stage notes (`info`)."""

    capture: object
    config: object
    model: object
    result: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, object] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: `modules` are imported first (missing -> unavailable), `after` names the stages that
    must have run, `run(ctx)` returns new result arrays (numpy)."""

    name: str
    modules: tuple[str, ...]
    run: Callable[[StageContext], dict[str, np.ndarray]]
    after: tuple[str, ...] = ()
    description: str = ""


_REGISTRY: dict[str, Stage] = {}


def register_stage(stage: Stage) -> None:
    """Add `stage`, or replace the stage of the same name (keeping its position)."""
    _REGISTRY[stage.name] = stage


def registered_stages() -> list[Stage]:
    return list(_REGISTRY.values())


def resolve_stages() -> list[tuple[Stage, bool, str]]:
    """Every registered stage with whether it can run here and, if not, why (the import error or the missing
    earlier stage)."""
    out: list[tuple[Stage, bool, str]] = []
    ok_names: set[str] = set()
    for st in _REGISTRY.values():
        reason = ""
        for mod in st.modules:
            try:
                importlib.import_module(mod)
            except ImportError as e:  # a stage still being written, or an optional dependency missing
                reason = f"{type(e).__name__}: {e}"
                break
        missing = [a for a in st.after if a not in ok_names]
        if not reason and missing:
            reason = f"needs stage(s) {missing}"
        if not reason:
            ok_names.add(st.name)
        out.append((st, not reason, reason))
    return out


def run_stages(ctx: StageContext, on_done: Callable[[Stage, float, dict], None] | None = None,
               progress: bool = True) -> dict[str, float]:
    """Run every available stage in order with a tqdm bar; `on_done(stage, seconds, new_arrays)` after each.
    Returns the wall time of each stage (first call: JIT compilation included)."""
    import time

    import jax

    todo = [(st, ok, why) for st, ok, why in resolve_stages()]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(ok for _, ok, _ in todo), desc="engine", unit="stage", dynamic_ncols=True)
    timings: dict[str, float] = {}
    for st, ok, why in todo:
        if not ok:
            ctx.info[st.name] = {"skipped": why}
            continue
        if bar is not None:
            bar.set_postfix_str(st.name)
        t0 = time.perf_counter()
        new = jax.block_until_ready(st.run(ctx))
        timings[st.name] = round(time.perf_counter() - t0, 3)
        ctx.result.update({k: np.asarray(v) for k, v in new.items()})
        if bar is not None:
            bar.update(1)
        if on_done is not None:
            on_done(st, timings[st.name], new)
    if bar is not None:
        bar.close()
    return timings


# ---------------------------------------------------------------------------------------------------------------
# Built-in stages: the jitted stage functions of h4djax.pipeline.
# ---------------------------------------------------------------------------------------------------------------


def _prepared(ctx: StageContext):
    if "pipeline" not in ctx.state:
        import jax.numpy as jnp

        from h4djax.geometry import to_jax
        from h4djax.pipeline import pipeline_from_config

        weights, options = pipeline_from_config(ctx.config, ctx.model)
        ctx.state["pipeline"] = (weights, options)
        ctx.state["cams"] = to_jax(ctx.capture.cameras, jnp.float32)
        ctx.state["keypoints"] = jnp.asarray(np.asarray(ctx.capture.keypoints, np.float32)[:, :, :, :17])
    return ctx.state["pipeline"]


def _triangulate(ctx: StageContext) -> dict[str, np.ndarray]:
    from h4djax.pipeline import triangulate_stage

    weights, options = _prepared(ctx)
    tri = triangulate_stage(ctx.state["cams"], ctx.state["keypoints"], weights, options)
    ctx.state["triangulation"] = tri
    j = np.asarray(tri.joints3d())
    ctx.info["triangulate"] = {"valid_pct": round(100.0 * float(np.mean(j[..., 3] > 0.5)), 2)}
    return {"joints3d_triangulated": j}


def _refine(ctx: StageContext) -> dict[str, np.ndarray]:
    from h4djax.pipeline import refine_stage

    weights, options = _prepared(ctx)
    refined = refine_stage(ctx.state["triangulation"], weights, options)
    ctx.state["refined"] = refined
    xyz = np.asarray(refined.xyz)
    valid = np.asarray(refined.valid)
    ctx.info["refine"] = {"filled": int(np.asarray(refined.summary.num_filled)),
                          "outliers": int(np.asarray(refined.summary.num_outliers))}
    return {"joints3d": np.concatenate([xyz, valid[..., None].astype(xyz.dtype)], -1)}


def _fit(ctx: StageContext) -> dict[str, np.ndarray]:
    import jax.numpy as jnp

    from h4djax.body import SmplParams
    from h4djax.body.lbs import smpl_joints_keypoints_batch
    from h4djax.fit.fit import model_points
    from h4djax.pipeline import fit_stage

    weights, options = _prepared(ctx)
    params, summary = fit_stage(ctx.model, ctx.state["refined"], weights, options)
    ctx.state["fit"] = (params, summary)
    pm = SmplParams(global_orient=jnp.swapaxes(params.global_orient, 0, 1),
                    body_pose=jnp.swapaxes(params.body_pose, 0, 1), betas=params.betas,
                    transl=jnp.swapaxes(params.transl, 0, 1))
    out = smpl_joints_keypoints_batch(ctx.model, pm)
    pts = model_points(ctx.model, out, "regressor")
    ctx.info["fit"] = {"collision": options.collision_fn is not None,
                       "final_objective": {s.name: round(float(np.asarray(t)[-1, -1]), 6)
                                           for s, t in zip(options.stages, summary.total)}}
    return {"global_orient": np.asarray(params.global_orient), "body_pose": np.asarray(params.body_pose),
            "betas": np.asarray(params.betas), "transl": np.asarray(params.transl),
            "smpl_joints": np.swapaxes(np.asarray(out.joints), 0, 1),
            "keypoints3d": np.swapaxes(np.asarray(pts), 0, 1)}


register_stage(Stage("triangulate", ("h4djax.pipeline", "h4djax.triangulate"), _triangulate, (),
                     "2D filtering + robust triangulation (PIPELINE.md 1.2-1.3)"))
register_stage(Stage("refine", ("h4djax.pipeline", "h4djax.refine"), _refine, ("triangulate",),
                     "whole-sequence 3D refinement (PIPELINE.md 1.4)"))
register_stage(Stage("fit", ("h4djax.pipeline", "h4djax.fit.fit", "h4djax.body"), _fit, ("refine",),
                     "three-stage body fit with the collision term (PIPELINE.md 1.5-1.6)"))
