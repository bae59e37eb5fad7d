"""Shared validation of calibration records: every reader funnels through `camera_record` and `assemble`, so bad
input always raises `CalibrationError(file, camera, field, ...)` naming the file's own field names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h4djax.errors import CalibrationError
from h4djax.geometry.cameras import Cameras

#: Largest |R R^T - I| entry accepted as orthonormal. Files written with ~7 significant digits stay inside it;
#: anything larger is a scaled or sheared matrix (e.g. a raw Harmony4D extrinsic, det ~ 1.18).
ORTHO_TOL = 1e-5


@dataclass(frozen=True)
class CameraRecord:
    """One validated camera, host-side float64 (see `Cameras` for the conventions)."""

    name: str
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: np.ndarray
    fisheye: bool


def as_array(file: str | Path, camera: str | None, field: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """float64 array of `shape` from a parsed value, or CalibrationError naming file/camera/field."""
    if not _numeric(value):  # numpy would happily parse "3" or True as numbers
        raise CalibrationError(file, camera, field, f"expected numbers of shape {list(shape)}, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(file, camera, field, f"expected numbers of shape {list(shape)}, got {value!r}") from None
    if arr.shape != shape:
        raise CalibrationError(file, camera, field, f"expected shape {list(shape)}, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise CalibrationError(file, camera, field, "contains NaN or infinite values")
    return arr


def _numeric(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return np.issubdtype(value.dtype, np.number) and not np.issubdtype(value.dtype, np.complexfloating)
    if isinstance(value, (list, tuple)):
        return all(_numeric(v) for v in value)
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def require(file: str | Path, camera: str | None, table: Mapping[str, Any], key: str) -> Any:
    if key not in table:
        raise CalibrationError(file, camera, key, "missing required field")
    return table[key]


def camera_record(
    file: str | Path,
    name: str,
    *,
    K: Any,
    dist: Any,
    R: Any,
    t: Any,
    size: Any,
    fisheye: bool,
    fields: Mapping[str, str] | None = None,
) -> CameraRecord:
    """Validate one camera. `fields` maps K/dist/R/t/size to the file's own field names for error messages."""
    f = {"K": "K", "dist": "dist", "R": "R", "t": "t", "size": "size", **(fields or {})}
    K = as_array(file, name, f["K"], K, (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(file, name, f["K"], f"focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    if K[1, 0] != 0 or not np.allclose(K[2], [0, 0, 1], atol=1e-12):
        raise CalibrationError(file, name, f["K"], f"not an upper-triangular intrinsic matrix with last row [0,0,1]: "
                               f"{K.tolist()}")
    d = np.asarray(dist, dtype=object)
    if d.ndim != 1 or d.size > 8:
        raise CalibrationError(file, name, f["dist"], f"expected at most 8 coefficients, got {dist!r}")
    d = as_array(file, name, f["dist"], dist, (d.size,))
    if fisheye and np.any(d[4:] != 0):
        raise CalibrationError(file, name, f["dist"], "a fisheye camera has exactly 4 coefficients k1..k4")
    R = as_array(file, name, f["R"], R, (3, 3))
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > ORTHO_TOL:
        raise CalibrationError(file, name, f["R"], f"rotation is not orthonormal (max |R R^T - I| = {err:.3g})")
    if np.linalg.det(R) < 0:
        raise CalibrationError(file, name, f["R"], "rotation has determinant -1 (a reflection)")
    t = as_array(file, name, f["t"], t, (3,))
    s = as_array(file, name, f["size"], size, (2,))
    if np.any(s <= 0) or np.any(s != np.rint(s)):
        raise CalibrationError(file, name, f["size"], f"image size must be two positive integers, got {s.tolist()}")
    return CameraRecord(
        name=name, K=K, dist=np.concatenate([d, np.zeros(8 - d.size)]), R=R, t=t, size=s.astype(np.int64),
        fisheye=bool(fisheye),
    )


def assemble(file: str | Path, records: Sequence[CameraRecord]) -> Cameras:
    """Stack validated records into a host `Cameras` (numpy float64 leaves), in record order."""
    if not records:
        raise CalibrationError(file, None, None, "no cameras found")
    names = [r.name for r in records]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CalibrationError(file, dup[0], None, f"camera name appears more than once: {dup}")
    return Cameras(
        K=np.stack([r.K for r in records]), dist=np.stack([r.dist for r in records]),
        R=np.stack([r.R for r in records]), t=np.stack([r.t for r in records]),
        size=np.stack([r.size for r in records]), fisheye=np.array([r.fisheye for r in records], dtype=bool),
        names=tuple(names),
    )


def records_of(cams: Cameras) -> list[CameraRecord]:
    """Inverse of `assemble` (host copies)."""
    K, d, R, t = (np.asarray(a, np.float64) for a in (cams.K, cams.dist, cams.R, cams.t))
    size, fe = np.asarray(cams.size), np.asarray(cams.fisheye, bool)
    names = cams.names or tuple(f"cam{i:02d}" for i in range(K.shape[0]))
    return [CameraRecord(names[i], K[i], d[i], R[i], t[i], size[i].astype(np.int64), bool(fe[i]))
            for i in range(K.shape[0])]
