"""The engine after the detectors: 2D filtering -> triangulation -> whole-sequence refinement -> body fit.

Two ways to run the same stage functions:

- `run_pipeline(model, cams, keypoints2d, weights, options)`: ONE jitted, differentiable JAX program. `jax.grad` of
  any scalar of its output w.r.t. the 2D keypoints, the camera parameters or the traced weights works (inlier
  selection is held fixed; fit stages must use Adam for reverse mode, see `h4djax.fit.fit`). vmapped over a padded
  batch of sequences by `run_pipeline_batch`.
- `PipelineRunner` (used by `h4d fit`): the stages as separate jitted calls, so the CLI can show progress and time
  each stage. The numbers are identical; only the compilation units differ.

Static vs traced: `PipelineOptions` holds structure (iteration counts, stage specs, chunk sizes, the collision
function) and is a static argument; `PipelineWeights` holds every threshold, weight and learning rate as traced
arrays, so sweeping them never recompiles.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Float

from h4djax.body.model import BodyModel, SmplParams
from h4djax.config import Config
from h4djax.fit.fit import CollisionFn, FitSummary, StageSpec, StageWeights, fit_sequence, stages_from_config
from h4djax.geometry.cameras import Cameras
from h4djax.refine.refine import RefineOptions, RefineResult, RefineWeights, refine
from h4djax.triangulate.filter import FilterParams, filter_keypoints
from h4djax.triangulate.robust import Triangulation, TriangulationParams, triangulate


@dataclass(frozen=True)
class PipelineOptions:
    """Static structure of the whole program (hashable)."""

    oks_keep: str = "none"
    triangulation_refine_iters: int = 3
    frame_chunk: int = 0
    dlt_normalize: bool = True
    refine: RefineOptions = RefineOptions()
    stages: tuple[StageSpec, ...] = ()
    epochs: int = 1
    collision_fn: CollisionFn | None = None


@struct.dataclass
class PipelineWeights:
    """Every numeric setting of the program, traced."""

    filter: FilterParams
    triangulation: TriangulationParams
    refine: RefineWeights
    fit: tuple[StageWeights, ...]


@struct.dataclass
class PipelineOutput:
    """Per-stage results of one sequence (frames-major, FORMATS.md)."""

    triangulation: Triangulation
    refined: RefineResult
    params: SmplParams
    fit_summary: FitSummary


def collision_fn_for(model: BodyModel, cfg: Config) -> CollisionFn:
    """The stage-3 collision term for `model` (cached: the same function object for the same model and settings,
    so the static `collision_fn` argument does not trigger recompilation)."""
    from h4djax.collision import CollisionMesh, CollisionSettings, make_collision_fn

    settings = CollisionSettings.from_config(cfg.collision)
    key = (model.name, model.sha256, model.num_verts, settings.grid_size, settings.vertex_stride, settings.method,
           settings.cube, settings.builder, settings.frame_chunk, float(settings.padding),
           float(settings.robustifier), float(settings.grid_tolerance), settings.grid_refresh,
           cfg.collision.n_spheres)
    if key not in _COLLISION_CACHE:
        spheres = None
        if settings.method == "spheres":
            from h4djax.collision import fit_sphere_proxy

            spheres = fit_sphere_proxy(model, n_spheres=cfg.collision.n_spheres)
        _COLLISION_CACHE[key] = make_collision_fn(CollisionMesh(faces=model.faces, spheres=spheres), settings)
    return _COLLISION_CACHE[key]


_COLLISION_CACHE: dict[tuple, CollisionFn] = {}


def pipeline_from_config(cfg: Config, model: BodyModel | None = None) -> tuple[PipelineWeights, PipelineOptions]:
    """Split a `Config` into traced weights and static options. `model` is needed when a stage uses collision."""
    uses_collision = any(st.w_collision != 0.0 for st in cfg.fit.stages)
    collision_fn = collision_fn_for(model, cfg) if (uses_collision and model is not None) else None
    specs, stage_weights = stages_from_config(cfg.fit, collision_available=collision_fn is not None)
    weights = PipelineWeights(
        filter=FilterParams.from_config(cfg.filter, dtype=jnp.float32),
        triangulation=TriangulationParams.from_config(cfg.triangulation, dtype=jnp.float32),
        refine=RefineWeights.from_config(cfg.refine),
        fit=stage_weights,
    )
    options = PipelineOptions(
        oks_keep=cfg.filter.oks_keep,
        triangulation_refine_iters=cfg.triangulation.refine_iters,
        frame_chunk=cfg.triangulation.frame_chunk,
        dlt_normalize=cfg.triangulation.dlt_normalize,
        refine=RefineOptions.from_config(cfg.refine),
        stages=specs,
        epochs=cfg.fit.epochs,
        collision_fn=collision_fn,
    )
    return weights, options


# --- the stages, each one jittable function -------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("options",))
def triangulate_stage(cams: Cameras, keypoints2d: Float[Array, "frames cams people kpts 3"],
                      weights: PipelineWeights, options: PipelineOptions) -> Triangulation:
    """2D filters (min keypoints, OKS duplicates) then robust triangulation of the 17 COCO keypoints."""
    filtered = filter_keypoints(keypoints2d, weights.filter, keep=options.oks_keep)
    return triangulate(cams, filtered.keypoints[..., :17, :], weights.triangulation,
                       refine_iters=options.triangulation_refine_iters, frame_chunk=options.frame_chunk,
                       normalize=options.dlt_normalize)


@functools.partial(jax.jit, static_argnames=("options",))
def refine_stage(tri: Triangulation, weights: PipelineWeights, options: PipelineOptions,
                 frame_mask: Float[Array, "frames"] | None = None) -> RefineResult:
    """Whole-sequence refinement of the triangulated keypoints."""
    return refine(tri.xyz, tri.valid, weights.refine, options.refine,
                  None if frame_mask is None else frame_mask > 0)


@functools.partial(jax.jit, static_argnames=("options",))
def fit_stage(model: BodyModel, refined: RefineResult, weights: PipelineWeights, options: PipelineOptions,
              frame_mask: Float[Array, "frames"] | None = None) -> tuple[SmplParams, FitSummary]:
    """Three-stage body fit to the refined keypoints (weight 1 observed, refine's w_filled for gap-filled)."""
    kw = jnp.where(refined.filled, weights.refine.w_filled, 1.0) * refined.valid
    return fit_sequence(model, refined.xyz, kw.astype(refined.xyz.dtype), options.stages, weights.fit,
                        options.epochs, frame_mask, options.collision_fn)


def _pipeline(model, cams, keypoints2d, weights, options, frame_mask):
    tri = triangulate_stage(cams, keypoints2d, weights, options)
    refined = refine_stage(tri, weights, options, frame_mask)
    params, summary = fit_stage(model, refined, weights, options, frame_mask)
    return PipelineOutput(triangulation=tri, refined=refined, params=params, fit_summary=summary)


@functools.partial(jax.jit, static_argnames=("options",))
def run_pipeline(model: BodyModel, cams: Cameras, keypoints2d: Float[Array, "frames cams people kpts 3"],
                 weights: PipelineWeights, options: PipelineOptions,
                 frame_mask: Float[Array, "frames"] | None = None) -> PipelineOutput:
    """The whole chain for one sequence as one jitted, differentiable program (see module docstring)."""
    return _pipeline(model, cams, keypoints2d, weights, options, frame_mask)


@functools.partial(jax.jit, static_argnames=("options",))
def run_pipeline_batch(model: BodyModel, cams: Cameras, keypoints2d: Float[Array, "batch frames cams people kpts 3"],
                       weights: PipelineWeights, options: PipelineOptions,
                       frame_mask: Float[Array, "batch frames"]) -> PipelineOutput:
    """A padded batch of sequences from one rig (frame_mask 0 on padding), vmapped over the batch axis: the axis to
    shard over devices with `jax.sharding` (sequences are independent)."""
    fn = lambda kp, fm: _pipeline(model, cams, kp, weights, options, fm)  # noqa: E731
    return jax.vmap(fn)(keypoints2d, frame_mask)


# --- host-side driver: capture directory -> result directory (h4d fit, h4d demo, h4d sweep) ----------------------


@dataclass
class FitRun:
    """What `fit_capture` produced: the FORMATS.md result, the report dict and the stage outputs."""

    result: "FitResult"  # noqa: F821 (h4djax.io.result)
    report: dict
    output: PipelineOutput


def _timed(name: str, fn, timings: dict, bar=None):
    import time

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    timings[name] = round(time.perf_counter() - t0, 3)
    if bar is not None:
        bar.set_postfix_str(f"{name} {timings[name]:.1f}s")
        bar.update(1)
    return out


def fit_capture(capture, cfg: Config, model: BodyModel, *, cameras: list[str] | None = None,
                vertices: bool = False, progress: bool = True) -> FitRun:
    """Run filtering, triangulation, refinement and the body fit on a `Capture` with associated COCO-17 keypoints.

    cameras: subset of camera names (None = all). Per-stage wall times (compilation included on a first call with
    new shapes) go to report["timings_s"]. Returns a `FitRun`; write it with `h4djax.io.result.write_result`.
    """
    import numpy as np

    from h4djax.body.lbs import smpl_forward_batch, smpl_joints_keypoints_batch
    from h4djax.errors import CaptureError
    from h4djax.fit.fit import model_points
    from h4djax.geometry.cameras import project, to_jax
    from h4djax.io.result import FitResult

    if capture.keypoints is None:
        raise CaptureError("the capture has no 2D keypoints (run detection first: h4d fit does it for videos/)")
    if not capture.associated:
        raise CaptureError("keypoints2d.npz has associated=False: associate identities first")
    if capture.joint_set not in ("coco17", "body25b", "halpe26", "blazepose33") or capture.keypoints.shape[3] < 17:
        raise CaptureError(f"joint_set '{capture.joint_set}' with {capture.keypoints.shape[3]} keypoints: the "
                           "engine needs COCO-17 (or a superset whose first 17 are COCO-17)")
    cams_host = capture.cameras
    kp = np.asarray(capture.keypoints, np.float32)
    if cameras:
        unknown = [c for c in cameras if c not in cams_host.names]
        if unknown:
            raise CaptureError(f"--cameras: unknown camera(s) {unknown}; the capture has {list(cams_host.names)}")
        idx = [cams_host.names.index(c) for c in cameras]
        cams_host = cams_host.select(idx)
        kp = kp[:, idx]
    if kp.shape[0] == 0 or kp.shape[2] == 0:
        raise CaptureError(f"keypoints have shape {kp.shape}: no frames or no people to fit")
    if kp.shape[1] < 2:
        raise CaptureError("triangulation needs at least 2 cameras")
    kp = kp[:, :, :, :17]
    cams = to_jax(cams_host, jnp.float32)
    weights, options = pipeline_from_config(cfg, model)
    timings: dict[str, float] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=4, desc="fit", unit="stage", dynamic_ncols=True)
    kp_j = jnp.asarray(kp)
    tri = _timed("triangulate", lambda: triangulate_stage(cams, kp_j, weights, options), timings, bar)
    refined = _timed("refine", lambda: refine_stage(tri, weights, options), timings, bar)
    params, summary = _timed("fit", lambda: fit_stage(model, refined, weights, options), timings, bar)

    def posed():
        pm = SmplParams(global_orient=jnp.swapaxes(params.global_orient, 0, 1),
                        body_pose=jnp.swapaxes(params.body_pose, 0, 1), betas=params.betas,
                        transl=jnp.swapaxes(params.transl, 0, 1))
        out = smpl_forward_batch(model, pm) if vertices else smpl_joints_keypoints_batch(model, pm)
        pts = model_points(model, out, "regressor")
        sw = lambda x: None if x is None else jnp.swapaxes(x, 0, 1)  # noqa: E731
        return sw(out.joints), sw(pts), sw(out.vertices)

    smpl_joints, keypoints3d, verts = _timed("outputs", posed, timings, bar)
    if bar is not None:
        bar.close()

    # Per-camera reprojection error (px) of the fitted keypoints against the detections used (confident ones).
    def reproj(points):
        uv, front = project(cams, points)  # [C, F, P, K, 2]
        uv = np.moveaxis(np.asarray(uv), 0, 1)
        det = kp[..., :2]
        ok = (kp[..., 2] > cfg.triangulation.candidate_conf) & np.moveaxis(np.asarray(front), 0, 1)
        err = np.linalg.norm(uv - det, axis=-1)
        return {name: (float(np.median(err[:, c][ok[:, c]])) if ok[:, c].any() else None)
                for c, name in enumerate(cams_host.names)}

    tri_np = np.asarray(tri.joints3d())
    ref_np = np.concatenate([np.asarray(refined.xyz), np.asarray(refined.valid)[..., None]], -1).astype(np.float32)
    result = FitResult(
        joints3d_triangulated=tri_np, joints3d=ref_np,
        global_orient=np.asarray(params.global_orient), body_pose=np.asarray(params.body_pose),
        betas=np.asarray(params.betas), transl=np.asarray(params.transl), smpl_joints=np.asarray(smpl_joints),
        keypoints3d=np.asarray(keypoints3d), camera_names=tuple(cams_host.names), joint_set="coco17",
        body_model=f"{model.name} {model.sha256}".strip(), vertices=None if verts is None else np.asarray(verts),
    )
    from h4djax.config import to_dict
    from h4djax.fit.losses import TERMS

    report = {
        "frames": int(kp.shape[0]), "cameras": list(cams_host.names), "people": int(kp.shape[2]),
        "timings_s": timings,
        "valid_fraction": {"triangulated": float(np.mean(tri_np[..., 3])), "refined": float(np.mean(ref_np[..., 3]))},
        "reprojection_px_median": {"triangulated": reproj(tri.xyz), "fitted_keypoints": reproj(keypoints3d)},
        "refine": {"terms": list(refined.summary.term_names),
                   "initial": np.asarray(refined.summary.loss_history[0]).tolist(),
                   "final": np.asarray(refined.summary.final_terms).tolist(),
                   "iterations": int(refined.summary.num_iters)},
        "fit_losses": {spec.name: {"terms": list(TERMS), "first": np.asarray(h[0, 0]).tolist(),
                                   "last": np.asarray(h[-1, -1]).tolist(),
                                   "total_first": float(t[0, 0]), "total_last": float(t[-1, -1])}
                       for spec, h, t in zip(options.stages, summary.history, summary.total)},
        "config": to_dict(cfg),
    }
    out = PipelineOutput(triangulation=tri, refined=refined, params=params, fit_summary=summary)
    return FitRun(result=result, report=report, output=out)
