"""`cameras.toml` of FORMATS.md: one table per camera, in file order = cams axis.

```toml
[cam01]
size = [1920, 1080]         # width, height in px
model = "opencv"            # "opencv" (k1,k2,p1,p2[,k3[,k4,k5,k6]]) or "fisheye" (k1..k4, cv2.fisheye)
K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
dist = [k1, k2, p1, p2, k3]
R = [[...], [...], [...]]   # world -> camera rotation (orthonormal)
t = [tx, ty, tz]            # metres; x_cam = R @ x_world + t
```

The writer prints every float with `repr`, so `read(write(cams)) == cams` bit for bit. Unknown keys are errors
(they are almost always typos of a required field).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np

from h4djax.errors import CalibrationError
from h4djax.geometry.cameras import Cameras
from h4djax.io._validate import camera_record, records_of, require, assemble

MODELS = {"opencv": (4, 5, 8), "fisheye": (4,)}
KEYS = ("size", "model", "K", "dist", "R", "t")


def read_cameras_toml(path: str | Path) -> Cameras:
    """Read a FORMATS.md `cameras.toml` into a host `Cameras` (numpy float64 leaves)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(path, None, None, "no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CalibrationError(path, None, None, f"not valid TOML ({e})") from None
    records = []
    for name, table in data.items():
        if not isinstance(table, dict):
            raise CalibrationError(path, name, None, "expected a table per camera ([name] with size, model, K, ...)")
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise CalibrationError(path, name, unknown[0], f"unknown key; valid keys are {list(KEYS)}")
        model = require(path, name, table, "model")
        if model not in MODELS:
            raise CalibrationError(path, name, "model", f"unknown camera model {model!r}; expected one of "
                                   f"{sorted(MODELS)}")
        dist = require(path, name, table, "dist")
        if not isinstance(dist, list) or len(dist) not in MODELS[model]:
            raise CalibrationError(path, name, "dist", f"model {model!r} takes {' or '.join(map(str, MODELS[model]))}"
                                   f" coefficients, got {dist!r}")
        records.append(camera_record(
            path, name, K=require(path, name, table, "K"), dist=dist, R=require(path, name, table, "R"),
            t=require(path, name, table, "t"), size=require(path, name, table, "size"), fisheye=model == "fisheye",
        ))
    return assemble(path, records)


def _f(x: float) -> str:
    # repr round-trips every float64 exactly; TOML accepts Python's spellings (1e-05, 1.0, -0.0).
    return repr(float(x))


def _vec(v: np.ndarray) -> str:
    return "[" + ", ".join(_f(x) for x in v) + "]"


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def write_cameras_toml(cams: Cameras, path: str | Path) -> None:
    """Write `cams` as a FORMATS.md `cameras.toml` (lossless; trailing zero opencv coefficients are trimmed to
    the shortest of 4 / 5 / 8, which reads back to the same zero-padded array)."""
    lines = ["# h4djax cameras.toml (FORMATS.md): x_cam = R @ x_world + t, metres and pixels", ""]
    for r in records_of(cams):
        if r.fisheye:
            if np.any(r.dist[4:] != 0):
                raise CalibrationError(path, r.name, "dist", "a fisheye camera has exactly 4 coefficients k1..k4")
            dist = r.dist[:4]
        else:
            n = 8 if np.any(r.dist[5:] != 0) else (5 if r.dist[4] != 0 else 4)
            dist = r.dist[:n]
        lines += [
            f"[{_key(r.name)}]",
            f"size = [{int(r.size[0])}, {int(r.size[1])}]",
            f"model = \"{'fisheye' if r.fisheye else 'opencv'}\"",
            "K = [" + ", ".join(_vec(row) for row in r.K) + "]",
            f"dist = {_vec(dist)}",
            "R = [" + ", ".join(_vec(row) for row in r.R) + "]",
            f"t = {_vec(r.t)}",
            "",
        ]
    Path(path).write_text("\n".join(lines))
