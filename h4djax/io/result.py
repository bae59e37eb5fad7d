"""Result directory of FORMATS.md (the output of `h4d fit`) and the Harmony4D release layout.

```
out/
  result.npz    joints3d_triangulated [F,P,K,4], joints3d [F,P,K,4] (x, y, z, valid), global_orient [F,P,3],
                body_pose [F,P,69], betas [P,10], transl [F,P,3], smpl_joints [F,P,24,3], keypoints3d [F,P,K,3],
                vertices [F,P,V,3] (only with --vertices), camera_names, joint_set, body_model (name + sha256)
  report.json   per-stage timings, per-camera reprojection error (px), losses per stage, config used
```

Host-side (numpy). Arrays are written as float32; the file is written to a temporary name and renamed, so an
interrupted write never leaves a truncated result.npz behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h4djax.errors import CaptureError

REQUIRED = ("joints3d_triangulated", "joints3d", "global_orient", "body_pose", "betas", "transl", "smpl_joints",
            "keypoints3d", "camera_names", "joint_set", "body_model")


@dataclass(frozen=True)
class FitResult:
    """Everything `h4d fit` writes to result.npz (FORMATS.md). Shapes frames-major; metres; axis-angle radians."""

    joints3d_triangulated: np.ndarray  # [F,P,K,4]
    joints3d: np.ndarray  # [F,P,K,4]
    global_orient: np.ndarray  # [F,P,3]
    body_pose: np.ndarray  # [F,P,69]
    betas: np.ndarray  # [P,10]
    transl: np.ndarray  # [F,P,3]
    smpl_joints: np.ndarray  # [F,P,24,3]
    keypoints3d: np.ndarray  # [F,P,K,3]
    camera_names: tuple[str, ...]
    joint_set: str
    body_model: str  # "name sha256"
    vertices: np.ndarray | None = None  # [F,P,V,3]


def write_result(directory: str | Path, result: FitResult, report: dict[str, Any]) -> Path:
    """Write result.npz and report.json into `directory` (created if needed); returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    for name in REQUIRED + ("vertices",):
        value = getattr(result, name)
        if value is None:
            continue
        if name in ("camera_names",):
            arrays[name] = np.asarray(value, dtype=str)
        elif name in ("joint_set", "body_model"):
            arrays[name] = np.asarray(value)
        else:
            arrays[name] = np.asarray(value, dtype=np.float32)
    tmp = out / "result.npz.partial"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, out / "result.npz")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def read_result(directory: str | Path) -> FitResult:
    """Read result.npz of a result directory (raises CaptureError naming a missing or corrupt field)."""
    path = Path(directory) / "result.npz"
    if not path.is_file():
        raise CaptureError(f"{path}: no such result file")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError: all mean a corrupt file
        raise CaptureError(f"{path}: cannot read ({e})") from None
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CaptureError(f"{path}: missing field(s) {missing}")
    return FitResult(
        **{k: data[k] for k in REQUIRED if k not in ("camera_names", "joint_set", "body_model")},
        camera_names=tuple(str(n) for n in data["camera_names"]),
        joint_set=str(data["joint_set"]),
        body_model=str(data["body_model"]),
        vertices=data.get("vertices"),
    )


def person_name(p: int) -> str:
    """Harmony4D person names: aria01, aria02, ..."""
    return f"aria{p + 1:02d}"


def write_harmony4d(directory: str | Path, result: FitResult, projected_joints: np.ndarray | None = None,
                    boxes: np.ndarray | None = None) -> Path:
    """Write the Harmony4D release layout (`processed_data/`, PIPELINE.md 1.7) from a fit result.

    poses3d/{t:05d}.npy: dict person -> (K,4); smpl/{t:05d}.npy: dict person -> {global_orient, transl, body_pose,
    betas, vertices (if present), joints}; poses2d/camXX/{t:05d}.npy: dict person -> projected SMPL joints [24,2]
    (`projected_joints` [F,C,P,24,2]); bbox/camXX/{t:05d}.npy: dict person -> [x1,y1,x2,y2] (`boxes` [F,C,P,4]).
    Frame files are 1-based like the release (t = frame + 1).
    """
    root = Path(directory) / "processed_data"
    F, P = result.joints3d.shape[:2]
    for sub in ("poses3d", "smpl"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for f in range(F):
        name = f"{f + 1:05d}.npy"
        np.save(root / "poses3d" / name, {person_name(p): result.joints3d[f, p] for p in range(P)},
                allow_pickle=True)
        smpl = {}
        for p in range(P):
            entry = {"global_orient": result.global_orient[f, p], "transl": result.transl[f, p],
                     "body_pose": result.body_pose[f, p], "betas": result.betas[p],
                     "joints": result.smpl_joints[f, p]}
            if result.vertices is not None:
                entry["vertices"] = result.vertices[f, p]
            smpl[person_name(p)] = entry
        np.save(root / "smpl" / name, smpl, allow_pickle=True)
        for arr, sub in ((projected_joints, "poses2d"), (boxes, "bbox")):
            if arr is None:
                continue
            for c, cam in enumerate(result.camera_names):
                d = root / sub / cam
                d.mkdir(parents=True, exist_ok=True)
                np.save(d / name, {person_name(p): arr[f, c, p] for p in range(P)}, allow_pickle=True)
    return root


def read_harmony4d_poses3d(directory: str | Path) -> np.ndarray:
    """Read `processed_data/poses3d/*.npy` back into [F,P,K,4] (persons sorted by name)."""
    files = sorted((Path(directory) / "processed_data" / "poses3d").glob("*.npy"))
    if not files:
        raise CaptureError(f"{directory}: no processed_data/poses3d/*.npy files")
    frames = [np.load(f, allow_pickle=True).item() for f in files]
    names = sorted(frames[0])
    return np.stack([np.stack([fr[n] for n in names]) for fr in frames])
