"""Capture directory of FORMATS.md (the input of `h4d fit`): read, validate, write.

```
capture/
  cameras.toml        one table per camera, in file order = cams axis
  keypoints2d.npz     keypoints f32 [frames, cams, people, kpts, 3] (x px, y px, confidence; 0 = missing),
                      joint_set (str), associated (bool), fps (float)
  videos/NAME.mp4     or images/NAME/000000.jpg ... (optional; NAME = camera name)
  gt.npz              optional: joints3d [frames, people, kpts, 3] (NaN = unknown) and, for synthetic captures,
                      global_orient [F,P,3], body_pose [F,P,69], betas [P,10], transl [F,P,3]
```

Host-side (numpy). Bad input raises `CaptureError` naming the file and the field; NaN keypoints are treated as
missing (confidence 0, with a warning) because several detectors emit NaN for undetected joints.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from h4djax.errors import CaptureError
from h4djax.geometry.cameras import Cameras
from h4djax.io.cameras_toml import read_cameras_toml, write_cameras_toml

#: Keypoint counts of the joint sets we know; other names are accepted without a count check.
JOINT_SET_SIZES = {"coco17": 17, "body25b": 25, "halpe26": 26, "blazepose33": 33}

SMPL_FIELDS = {"global_orient": 3, "body_pose": 69, "transl": 3}
GT_FIELDS = ("global_orient", "body_pose", "betas", "transl")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


@dataclass(frozen=True)
class GroundTruth:
    """Optional ground truth. joints3d: f32 [frames, people, kpts, 3] metres (NaN = unknown). SMPL-layout
    parameters of the body model used (synthetic captures only; all four or none): global_orient [F,P,3],
    body_pose [F,P,69] (axis-angle), betas [P,10], transl [F,P,3]."""

    joints3d: np.ndarray
    global_orient: np.ndarray | None = None
    body_pose: np.ndarray | None = None
    betas: np.ndarray | None = None
    transl: np.ndarray | None = None

    @property
    def has_smpl(self) -> bool:
        return self.betas is not None


@dataclass(frozen=True)
class Capture:
    """A calibrated multi-view capture.

    cameras: host `Cameras` (cams axis = cameras.toml order). keypoints: f32 [frames, cams, people, kpts, 3] or None
    when only videos are given. joint_set: e.g. "coco17". associated: True if the people axis is one identity
    across cams and frames. fps: frames per second. gt: optional `GroundTruth`. media: camera name -> video file or
    image folder (only those present).
    """

    cameras: Cameras
    keypoints: np.ndarray | None
    joint_set: str = "coco17"
    associated: bool = True
    fps: float = 30.0
    gt: GroundTruth | None = None
    media: dict[str, Path] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return 0 if self.keypoints is None else int(self.keypoints.shape[0])

    @property
    def num_people(self) -> int:
        return 0 if self.keypoints is None else int(self.keypoints.shape[2])

    def __post_init__(self):
        # Validate on construction too, so a Capture built in code is held to the same contract as one read.
        kp = None if self.keypoints is None else _check_keypoints("<Capture>", self.keypoints, self.cameras,
                                                                  self.joint_set)
        object.__setattr__(self, "keypoints", kp)
        if self.gt is not None:
            _check_gt("<Capture.gt>", self.gt, kp)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CaptureError(f"{path}: not a readable .npz file ({e})") from None


def _check_keypoints(file: str | Path, kp: np.ndarray, cams: Cameras, joint_set: str) -> np.ndarray:
    kp = np.asarray(kp)
    if not np.issubdtype(kp.dtype, np.floating):
        raise CaptureError(f"{file}: field 'keypoints' must be floating point, got dtype {kp.dtype}")
    if kp.ndim != 5 or kp.shape[-1] != 3:
        raise CaptureError(f"{file}: field 'keypoints' must have shape [frames, cams, people, kpts, 3], "
                           f"got {list(kp.shape)}")
    if kp.shape[1] != cams.num_cams:
        raise CaptureError(f"{file}: field 'keypoints' has {kp.shape[1]} cameras but cameras.toml has "
                           f"{cams.num_cams} ({list(cams.names)})")
    expected = JOINT_SET_SIZES.get(joint_set)
    if expected is not None and kp.shape[3] != expected:
        raise CaptureError(f"{file}: field 'keypoints' has {kp.shape[3]} keypoints but joint_set {joint_set!r} "
                           f"has {expected}")
    kp = kp.astype(np.float32, copy=True)
    bad = ~np.isfinite(kp).all(axis=-1)
    if bad.any():
        warnings.warn(f"{file}: {int(bad.sum())} keypoints contain NaN/inf; treated as missing (confidence 0)",
                      stacklevel=3)
        kp[bad] = 0.0
    if (kp[..., 2] < 0).any():
        raise CaptureError(f"{file}: field 'keypoints' has negative confidences (expected >= 0, 0 = missing)")
    return kp


def _check_gt(file: str | Path, gt: GroundTruth, kp: np.ndarray | None) -> None:
    j = np.asarray(gt.joints3d)
    if j.ndim != 4 or j.shape[-1] != 3:
        raise CaptureError(f"{file}: field 'joints3d' must have shape [frames, people, kpts, 3], got {list(j.shape)}")
    if kp is not None and (j.shape[0] != kp.shape[0] or j.shape[2] != kp.shape[3]):
        raise CaptureError(f"{file}: field 'joints3d' has {j.shape[0]} frames x {j.shape[2]} keypoints but the "
                           f"keypoints have {kp.shape[0]} frames x {kp.shape[3]} keypoints")
    F, P = j.shape[:2]
    present = [n for n in ("global_orient", "body_pose", "betas", "transl") if getattr(gt, n) is not None]
    if present and len(present) != 4:
        missing = sorted({"global_orient", "body_pose", "betas", "transl"} - set(present))
        raise CaptureError(f"{file}: SMPL parameters need all of global_orient, body_pose, betas, transl; "
                           f"missing field '{missing[0]}'")
    if present:
        for name, width in SMPL_FIELDS.items():
            a = np.asarray(getattr(gt, name))
            if a.shape != (F, P, width):
                raise CaptureError(f"{file}: field '{name}' must have shape [{F}, {P}, {width}], got {list(a.shape)}")
        b = np.asarray(gt.betas)
        if b.ndim != 2 or b.shape[0] != P:
            raise CaptureError(f"{file}: field 'betas' must have shape [{P}, betas], got {list(b.shape)}")
        for name in present:
            if not np.isfinite(np.asarray(getattr(gt, name))).all():
                raise CaptureError(f"{file}: field '{name}' contains NaN or infinite values")


def _scalar(file: Path, data: dict, key: str, kind: type):
    if key not in data:
        raise CaptureError(f"{file}: missing field '{key}'")
    a = np.asarray(data[key])
    if a.size != 1:
        raise CaptureError(f"{file}: field '{key}' must be a scalar, got shape {list(a.shape)}")
    v = a.reshape(()).item()
    if kind is str:
        if not isinstance(v, str):
            raise CaptureError(f"{file}: field '{key}' must be a string, got {v!r}")
        return v
    if kind is bool:
        if not isinstance(v, (bool, np.bool_)):
            raise CaptureError(f"{file}: field '{key}' must be a boolean, got {v!r}")
        return bool(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
        raise CaptureError(f"{file}: field '{key}' must be a positive number, got {v!r}")
    return float(v)


def _find_media(root: Path, names: tuple[str, ...]) -> dict[str, Path]:
    media = {}
    for name in names:
        for suffix in VIDEO_SUFFIXES:
            p = root / "videos" / f"{name}{suffix}"
            if p.is_file():
                media[name] = p
                break
        else:
            p = root / "images" / name
            if p.is_dir():
                media[name] = p
    return media


def read_capture(directory: str | Path, require_keypoints: bool = True) -> Capture:
    """Read and validate a capture directory (FORMATS.md). With require_keypoints=False a capture that has videos
    or images for every camera but no keypoints2d.npz is accepted (keypoints=None; a detector fills them)."""
    root = Path(directory)
    if not root.is_dir():
        raise CaptureError(f"{root}: no such capture directory")
    cam_file = root / "cameras.toml"
    if not cam_file.exists():
        raise CaptureError(f"{root}: missing cameras.toml")
    cams = read_cameras_toml(cam_file)  # CalibrationError names the file, camera and field
    media = _find_media(root, cams.names)
    kp_file = root / "keypoints2d.npz"
    if not kp_file.exists():
        missing = [n for n in cams.names if n not in media]
        if require_keypoints or missing:
            raise CaptureError(f"{root}: missing keypoints2d.npz" + (
                f" (and no videos/ or images/ for cameras {missing})" if missing else ""))
        return Capture(cameras=cams, keypoints=None, joint_set="", associated=False, fps=0.0, media=media)
    data = _load_npz(kp_file)
    if "keypoints" not in data:
        raise CaptureError(f"{kp_file}: missing field 'keypoints'")
    joint_set = _scalar(kp_file, data, "joint_set", str)
    kp = _check_keypoints(kp_file, data["keypoints"], cams, joint_set)
    associated = _scalar(kp_file, data, "associated", bool)
    fps = _scalar(kp_file, data, "fps", float)
    gt = None
    gt_file = root / "gt.npz"
    if gt_file.exists():
        g = _load_npz(gt_file)
        if "joints3d" not in g:
            raise CaptureError(f"{gt_file}: missing field 'joints3d'")
        unknown = sorted(set(g) - {"joints3d", *GT_FIELDS})
        if unknown:
            raise CaptureError(f"{gt_file}: unknown field '{unknown[0]}'")
        gt = GroundTruth(**{k: g[k].astype(np.float32) for k in ("joints3d", *GT_FIELDS) if k in g})
        _check_gt(gt_file, gt, kp)
    return Capture(cameras=cams, keypoints=kp, joint_set=joint_set, associated=associated, fps=fps, gt=gt,
                   media=media)


def write_capture(directory: str | Path, capture: Capture) -> None:
    """Write `capture` as a FORMATS.md capture directory (cameras.toml, keypoints2d.npz, gt.npz if present).
    Media files are not copied."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    write_cameras_toml(capture.cameras, root / "cameras.toml")
    if capture.keypoints is not None:
        np.savez_compressed(
            root / "keypoints2d.npz", keypoints=np.asarray(capture.keypoints, np.float32),
            joint_set=np.array(capture.joint_set), associated=np.array(bool(capture.associated)),
            fps=np.array(float(capture.fps)),
        )
    if capture.gt is not None:
        arrays = {k: np.asarray(getattr(capture.gt, k), np.float32)
                  for k in ("joints3d", "global_orient", "body_pose", "betas", "transl")
                  if getattr(capture.gt, k) is not None}
        np.savez_compressed(root / "gt.npz", **arrays)
