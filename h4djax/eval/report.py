"""Evaluate a result directory (FORMATS.md `result.npz`) against ground truth: one row of metrics per pipeline
stage, per-joint and per-camera breakdowns, printed as a table and written as JSON (`h4d eval`).

Stages scored when their arrays are present in the result:

- `triangulated`: `joints3d_triangulated` [F,P,K,4] (x, y, z, valid);
- `refined`: `joints3d` [F,P,K,4];
- `fit`: `keypoints3d` [F,P,K,3] regressed from the fitted mesh; with SMPL ground truth and fitted parameters
  also PVE (the two meshes from the body model) and the fitted meshes' interpenetration.

Per stage: MPJPE, PA-MPJPE, PCP, acceleration error (mm/frame^2), coverage (share of ground-truth keypoints the
stage returned as valid), and the reprojection error (px) of its 3D keypoints against the clean ground-truth
projections (synthetic captures: `synth.npz`) or else the observed 2D keypoints (confidence > 0.5), per camera and
per joint. Host-side driver; the metrics themselves are `h4djax.eval.metrics` (JAX).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from h4djax.errors import CaptureError, H4DError
from h4djax.eval import metrics as M

__all__ = ["GroundTruthData", "load_ground_truth", "load_result", "evaluate", "evaluate_stage", "format_table",
           "STAGE_KEYS"]

#: Result array -> stage name, in pipeline order.
STAGE_KEYS: tuple[tuple[str, str], ...] = (
    ("triangulated", "joints3d_triangulated"), ("refined", "joints3d"), ("fit", "keypoints3d"),
)
COCO17 = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
          "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")


@dataclass
class GroundTruthData:
    """What evaluation needs from a capture: joints3d f[F,P,K,3] (NaN = unknown), optional SMPL params, and
    optionally the cameras, the observed keypoints and the clean projections."""

    joints3d: np.ndarray
    smpl: dict | None = None
    cameras: object | None = None
    keypoints2d: np.ndarray | None = None
    clean2d: np.ndarray | None = None
    camera_names: tuple[str, ...] = ()


def load_ground_truth(path: str | Path) -> GroundTruthData:
    """Ground truth from a capture directory (gt.npz + cameras + keypoints, synth.npz if present) or a bare
    gt.npz file. Raises CaptureError naming the path when there is no ground truth."""
    p = Path(path)
    if p.is_dir():
        from h4djax.io.capture import read_capture

        cap = read_capture(p)
        if cap.gt is None:
            raise CaptureError(f"{p}: capture has no gt.npz to evaluate against")
        g = cap.gt
        smpl = ({k: np.asarray(getattr(g, k)) for k in ("global_orient", "body_pose", "betas", "transl")}
                if g.has_smpl else None)
        clean = None
        if (p / "synth.npz").exists():
            with np.load(p / "synth.npz") as z:
                clean = np.asarray(z["clean"], np.float64)
        return GroundTruthData(joints3d=np.asarray(g.joints3d, np.float64), smpl=smpl, cameras=cap.cameras,
                               keypoints2d=cap.keypoints, clean2d=clean, camera_names=cap.cameras.names)
    if p.is_file():
        try:
            with np.load(p) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise CaptureError(f"{p}: not a readable gt.npz ({e})") from None
        if "joints3d" not in data:
            raise CaptureError(f"{p}: missing field 'joints3d'")
        smpl = ({k: data[k] for k in ("global_orient", "body_pose", "betas", "transl")}
                if all(k in data for k in ("global_orient", "body_pose", "betas", "transl")) else None)
        return GroundTruthData(joints3d=np.asarray(data["joints3d"], np.float64), smpl=smpl)
    raise CaptureError(f"{p}: no such capture directory or gt.npz")


def load_result(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of `result.npz` (path = result directory or the file)."""
    p = Path(path)
    f = p / "result.npz" if p.is_dir() else p
    if not f.exists():
        raise H4DError(f"{f}: no such result directory or result.npz")
    try:
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise H4DError(f"{f}: not a readable result.npz ({e})") from None


def _mm(x) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(1000.0 * x, 2)


def _r(x, nd=2) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, nd)


def evaluate_stage(pred: np.ndarray, gt: GroundTruthData) -> dict:
    """Metrics of one stage's keypoints `pred` [F,P,K,3] or [F,P,K,4] (4th = valid flag) against `gt`."""
    pred = np.asarray(pred, np.float64)
    gtj = gt.joints3d
    if pred.shape[:3] != gtj.shape[:3]:
        raise H4DError(f"result has shape {list(pred.shape[:3])} (frames, people, kpts), ground truth "
                       f"{list(gtj.shape[:3])}")
    valid = pred[..., 3] > 0.5 if pred.shape[-1] == 4 else np.all(np.isfinite(pred[..., :3]), -1)
    xyz = np.where(valid[..., None], pred[..., :3], np.nan)
    gt_ok = np.all(np.isfinite(gtj), -1)
    X, G = jnp.asarray(xyz, jnp.float32), jnp.asarray(gtj, jnp.float32)
    err = np.asarray(M.joint_errors(X, G))
    out = {
        "mpjpe_mm": _mm(M.mpjpe(X, G)),
        "pa_mpjpe_mm": _mm(M.pa_mpjpe(X, G)),
        "pcp_pct": _r(100 * M.pcp(X, G), 1),
        "accel_mm_f2": _mm(M.accel_error(X, G)),
        "coverage_pct": _r(100.0 * np.sum(valid & gt_ok) / max(np.sum(gt_ok), 1), 1),
        "per_joint_mm": [_mm(v) for v in np.asarray(M.masked_mean(jnp.asarray(err), axis=(0, 1)))],
        "per_person_mm": [_mm(v) for v in np.asarray(M.masked_mean(jnp.asarray(err), axis=(0, 2)))],
    }
    if gt.cameras is not None:
        if gt.clean2d is not None:
            # Clean projections exist everywhere; score those that fall inside the image.
            size = np.asarray(gt.cameras.size)[None, :, None, None, :]
            uv, ref = gt.clean2d, "clean"
            mask = np.isfinite(uv).all(-1) & np.all((uv >= 0) & (uv < size), -1)
        else:
            uv, mask, ref = gt.keypoints2d[..., :2], gt.keypoints2d[..., 2] > 0.5, "observed"
        from h4djax.geometry import to_jax

        e2 = np.asarray(M.reprojection_errors(to_jax(gt.cameras), X, jnp.asarray(uv, jnp.float32),
                                              jnp.asarray(mask)))
        out["reproj_px"] = _r(M.masked_mean(jnp.asarray(e2)))
        out["reproj_reference"] = ref
        out["per_camera_px"] = [_r(v) for v in np.asarray(M.masked_mean(jnp.asarray(e2), axis=(0, 2, 3)))]
        out["per_joint_px"] = [_r(v) for v in np.asarray(M.masked_mean(jnp.asarray(e2), axis=(0, 1, 2)))]
    return out


def evaluate(result: dict[str, np.ndarray], gt: GroundTruthData, body_model=None, mesh_frames: int = 30) -> dict:
    """All stages present in `result`, plus mesh metrics (PVE, interpenetration of the fitted bodies on
    `mesh_frames` evenly spaced frames) when both sides have SMPL parameters and a body model is given."""
    report: dict = {"stages": {}, "joint_names": list(COCO17), "camera_names": list(gt.camera_names)}
    for stage, key in STAGE_KEYS:
        if key in result:
            report["stages"][stage] = evaluate_stage(result[key], gt)
    if body_model is not None and gt.smpl is not None and all(
            k in result for k in ("global_orient", "body_pose", "betas", "transl")):
        report["mesh"] = mesh_metrics(result, gt, body_model, mesh_frames)
        if "fit" in report["stages"]:
            report["stages"]["fit"]["pve_mm"] = report["mesh"]["pve_mm"]
    return report


def mesh_metrics(result: dict, gt: GroundTruthData, model, frames: int = 30) -> dict:
    """PVE of the fitted meshes vs the ground-truth meshes and interpenetration of the fitted people (first two)."""
    from h4djax.body import SmplParams, smpl_forward_batch
    from h4djax.synth.generate import body_topology

    F = gt.joints3d.shape[0]
    fr = np.unique(np.linspace(0, F - 1, min(frames, F)).round().astype(int))

    def verts(src):
        go = jnp.asarray(np.asarray(src["global_orient"])[fr], jnp.float32)
        p = SmplParams(global_orient=go, body_pose=jnp.asarray(np.asarray(src["body_pose"])[fr], jnp.float32),
                       betas=jnp.broadcast_to(jnp.asarray(src["betas"], jnp.float32)[None],
                                              go.shape[:2] + (np.shape(src["betas"])[-1],)),
                       transl=jnp.asarray(np.asarray(src["transl"])[fr], jnp.float32))
        return smpl_forward_batch(model, p).vertices  # [f, P, V, 3]

    vp, vg = verts(result), verts(gt.smpl)
    out = {"frames": int(len(fr)), "pve_mm": _mm(M.pve(vp, vg))}
    if vp.shape[1] >= 2:
        topo = body_topology(model)
        ip = M.interpenetration(vp[:, 0], vp[:, 1], topo.clusters, vertex_stride=2)
        ig = M.interpenetration(vg[:, 0], vg[:, 1], topo.clusters, vertex_stride=2)
        out["fit_max_depth_mm"] = _mm(jnp.max(ip.depth_max))
        out["fit_mean_depth_mm"] = _mm(jnp.mean(ip.depth_max))
        out["gt_max_depth_mm"] = _mm(jnp.max(ig.depth_max))
        out["gt_mean_depth_mm"] = _mm(jnp.mean(ig.depth_max))
    return out


def format_table(report: dict) -> str:
    """A plain-text table: one row per stage."""
    cols = [("stage", "{:<13}"), ("MPJPE mm", "{:>9}"), ("PA-MPJPE mm", "{:>12}"), ("PCP %", "{:>7}"),
            ("accel mm/f2", "{:>12}"), ("coverage %", "{:>11}"), ("reproj px", "{:>10}"), ("PVE mm", "{:>8}")]
    keys = [None, "mpjpe_mm", "pa_mpjpe_mm", "pcp_pct", "accel_mm_f2", "coverage_pct", "reproj_px", "pve_mm"]
    lines = ["  ".join(f.format(c) for c, f in cols)]
    lines.append("-" * len(lines[0]))
    for stage, m in report["stages"].items():
        vals = [stage] + [("-" if m.get(k) is None else m.get(k)) for k in keys[1:]]
        lines.append("  ".join(f.format(str(v)) for (_, f), v in zip(cols, vals)))
    if "mesh" in report:
        mm = report["mesh"]
        if "fit_max_depth_mm" in mm:
            lines.append(f"interpenetration (max over {mm['frames']} frames): fit {mm['fit_max_depth_mm']} mm, "
                         f"ground truth {mm['gt_max_depth_mm']} mm")
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
