"""`read_cameras(path)`: one entry point for every calibration format h4djax reads (dispatch on the file type).

| path                                             | reader                                   |
|--------------------------------------------------|------------------------------------------|
| `*.toml` with `K` tables (FORMATS.md)             | `cameras_toml.read_cameras_toml`         |
| `*.toml` with `matrix` tables (Pose2Sim/OpenCV)   | `pose2sim.read_pose2sim_toml`            |
| `*.qca.txt`, `*.qca` (Qualisys XML)               | `pose2sim.read_qualisys_qca`             |
| folder with `colmap/workplace/` (Harmony4D)       | `colmap.read_harmony4d`                  |
| folder with cameras/images `.txt` or `.bin`       | `colmap.read_colmap`                     |
| folder with `cameras.toml` (capture directory)    | `cameras_toml.read_cameras_toml`         |

Every reader returns a host `Cameras` (numpy float64 leaves) in metres with orthonormal world -> camera rotations
(COLMAP models without a similarity stay in COLMAP units) and raises `CalibrationError` naming file, camera and
field on bad input.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from h4djax.errors import CalibrationError
from h4djax.geometry.cameras import Cameras
from h4djax.io.cameras_toml import read_cameras_toml
from h4djax.io.colmap import read_colmap, read_harmony4d
from h4djax.io.pose2sim import read_pose2sim_toml, read_qualisys_qca


def read_cameras(path: str | Path) -> Cameras:
    """Read any supported calibration (see the module table) into a host `Cameras`."""
    path = Path(path)
    if not path.exists():
        raise CalibrationError(path, None, None, "no such file or directory")
    if path.is_dir():
        if (path / "colmap" / "workplace").is_dir():
            return read_harmony4d(path)
        names = {p.name for p in path.iterdir()}
        if {"cameras.txt", "images.txt"} <= names or {"cameras.bin", "images.bin"} <= names:
            return read_colmap(path)
        if "cameras.toml" in names:
            return read_cameras_toml(path / "cameras.toml")
        raise CalibrationError(path, None, None, "no calibration found: expected cameras.toml, a COLMAP model "
                               "(cameras/images .txt or .bin) or a Harmony4D sequence (colmap/workplace/)")
    name = path.name.lower()
    if name.endswith(".qca.txt") or name.endswith(".qca"):
        return read_qualisys_qca(path)
    if name.endswith(".toml"):
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise CalibrationError(path, None, None, f"not valid TOML ({e})") from None
        tables = [v for k, v in data.items() if isinstance(v, dict) and k != "metadata"]
        if tables and all("matrix" in t for t in tables):
            return read_pose2sim_toml(path)
        return read_cameras_toml(path)
    if name.endswith(".txt") and path.read_text(errors="replace").lstrip().startswith("<?xml"):
        return read_qualisys_qca(path)
    raise CalibrationError(path, None, None, "unknown calibration file type (expected .toml, .qca.txt, a COLMAP "
                           "model folder or a Harmony4D sequence folder)")
