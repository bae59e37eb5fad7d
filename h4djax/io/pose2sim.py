"""Pose2Sim / OpenCV calibration TOML and Qualisys `.qca.txt` readers.

Pose2Sim TOML (`Calib_*.toml`), one table per camera (a `[metadata]` table is ignored):
    name (optional, default: the table key), size [w, h] px, matrix 3x3 px, distortions [k1, k2, p1, p2] (or
    k1..k4 with fisheye = true), rotation = Rodrigues vector world -> camera, translation in metres.

Qualisys `.qca.txt` (XML) per `<camera serial=...>`:
    * `<transform r11..r33 x y z>`: the rotation and the camera centre C in millimetres. Read column-major
      (r11 r21 r31 is the first row, as Pose2Sim's `read_qca` does) the attributes give the camera-to-world
      rotation; read row-major they give ``Rq`` = world -> camera in Qualisys camera axes (x right, y up, z out of
      the lens, backwards). The OpenCV world -> camera rotation is ``R = diag(1, -1, -1) @ Rq`` (a half turn about
      the camera x axis) and ``t = -R @ C / 1000``. (Checked on the Pose2Sim demo: equal to its TOML to 1e-15.)
    * `<intrinsic>`: focal lengths, principal point and sensor extents in Qualisys sub-pixel units (1/64 px), with
      the principal point relative to the full sensor: ``cx = centerPointU / 64 - fov_video.left`` (same for v).
    * Distortion (radialDistortion1..3, tangentalDistortion1..2) is divided by 64 as Pose2Sim's own converter
      (`calib_qca_fun`) does, so that the two files of a rig agree; see `QCA_DISTORTION_SCALE`.
    * Image size from `<fov_video>`: ``right - left + 1`` by ``bottom - top + 1``.
"""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from h4djax.errors import CalibrationError
from h4djax.geometry.cameras import Cameras
from h4djax.io._validate import as_array, assemble, camera_record, require

#: Pose2Sim's Qualisys converter divides the distortion coefficients by 64 like the sub-pixel intrinsics. Whether
#: Qualisys meant that is undocumented; we follow the converter so `.qca.txt` and its Pose2Sim TOML are the same rig.
QCA_DISTORTION_SCALE = 1.0 / 64.0

# Qualisys camera frame (y up, z out of the lens) -> OpenCV camera frame (y down, z into the scene).
_QUALISYS_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def read_pose2sim_toml(path: str | Path) -> Cameras:
    """Read a Pose2Sim / OpenCV calibration TOML into a host `Cameras` (metres, world -> camera)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(path, None, None, "no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CalibrationError(path, None, None, f"not valid TOML ({e})") from None
    records = []
    for key, table in data.items():
        if key == "metadata" or not isinstance(table, dict):
            continue
        name = str(table.get("name", key))
        fisheye = table.get("fisheye", False)
        if not isinstance(fisheye, bool):
            raise CalibrationError(path, name, "fisheye", f"expected true/false, got {fisheye!r}")
        rvec = as_array(path, name, "rotation", require(path, name, table, "rotation"), (3,))
        dist = require(path, name, table, "distortions")
        if fisheye and (not isinstance(dist, list) or len(dist) != 4):
            raise CalibrationError(path, name, "distortions", f"a fisheye camera takes 4 coefficients, got {dist!r}")
        records.append(camera_record(
            path, name, K=require(path, name, table, "matrix"), dist=dist, R=Rotation.from_rotvec(rvec).as_matrix(),
            t=require(path, name, table, "translation"), size=require(path, name, table, "size"), fisheye=fisheye,
            fields={"K": "matrix", "dist": "distortions", "R": "rotation", "t": "translation"},
        ))
    return assemble(path, records)


def _attr(path: Path, camera: str, elem: ET.Element | None, tag: str, key: str) -> float:
    field = f"{tag}.{key}"
    if elem is None:
        raise CalibrationError(path, camera, tag, "missing element")
    value = elem.get(key)
    if value is None:
        raise CalibrationError(path, camera, field, "missing required attribute")
    try:
        out = float(value)
    except ValueError:
        raise CalibrationError(path, camera, field, f"not a number: {value!r}") from None
    if not np.isfinite(out):
        raise CalibrationError(path, camera, field, "contains NaN or infinite values")
    return out


def read_qualisys_qca(path: str | Path) -> Cameras:
    """Read a Qualisys `.qca.txt` calibration export into a host `Cameras` (conventions in the module docstring)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise CalibrationError(path, None, None, "no such file") from None
    except ET.ParseError as e:
        raise CalibrationError(path, None, None, f"not valid Qualisys XML ({e})") from None
    cams = root.findall("cameras/camera")
    records = []
    for i, cam in enumerate(cams):
        name = cam.get("serial") or f"cam{i + 1:02d}"
        fov, tr, intr = cam.find("fov_video"), cam.find("transform"), cam.find("intrinsic")
        left, top = _attr(path, name, fov, "fov_video", "left"), _attr(path, name, fov, "fov_video", "top")
        width = _attr(path, name, fov, "fov_video", "right") - left + 1
        height = _attr(path, name, fov, "fov_video", "bottom") - top + 1
        sub = 64.0  # Qualisys sub-pixel units per pixel
        fx = _attr(path, name, intr, "intrinsic", "focalLengthU") / sub
        fy = _attr(path, name, intr, "intrinsic", "focalLengthV") / sub
        cx = _attr(path, name, intr, "intrinsic", "centerPointU") / sub - left
        cy = _attr(path, name, intr, "intrinsic", "centerPointV") / sub - top
        skew = _attr(path, name, intr, "intrinsic", "skew") / sub if intr is not None and intr.get("skew") else 0.0
        dist = [
            _attr(path, name, intr, "intrinsic", k) * QCA_DISTORTION_SCALE
            for k in ("radialDistortion1", "radialDistortion2", "tangentalDistortion1", "tangentalDistortion2")
        ]
        k3 = intr.get("radialDistortion3") if intr is not None else None
        if k3 is not None:
            dist.append(_attr(path, name, intr, "intrinsic", "radialDistortion3") * QCA_DISTORTION_SCALE)
        Rq = np.array([[_attr(path, name, tr, "transform", f"r{a}{b}") for b in (1, 2, 3)] for a in (1, 2, 3)])
        err = np.abs(Rq @ Rq.T - np.eye(3)).max()
        if err > 1e-5:
            raise CalibrationError(path, name, "transform", f"rotation r11..r33 is not orthonormal "
                                   f"(max |R R^T - I| = {err:.3g})")
        C = np.array([_attr(path, name, tr, "transform", k) for k in "xyz"]) / 1000.0  # mm -> m
        R = _QUALISYS_TO_OPENCV @ Rq
        records.append(camera_record(
            path, name, K=[[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dist=dist, R=R, t=-R @ C,
            size=[width, height], fisheye=False,
            fields={"K": "intrinsic", "dist": "intrinsic", "R": "transform", "t": "transform", "size": "fov_video"},
        ))
    return assemble(path, records)
