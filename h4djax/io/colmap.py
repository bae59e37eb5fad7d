"""COLMAP models (text or binary, read with pycolmap) and the Harmony4D sequence layout.

COLMAP (`read_colmap(model_dir)`):
    * camera name = first path component of the image name (`cam02/00001.jpg` -> `cam02`); cameras are static, so
      one image per camera is expected. If several images share a name, the first (lowest image id) is used and
      the others must agree with it (same intrinsics, pose within 1e-6) or a CalibrationError is raised.
    * pose: COLMAP's `cam_from_world` is world -> camera (x_cam = R x + t); quaternions are renormalized.
    * models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV (-> opencv) and OPENCV_FISHEYE
      (-> fisheye, same Kannala-Brandt model as cv2.fisheye). Others raise CalibrationError naming the model.
    * principal points are used as stored (COLMAP puts pixel centres at +0.5, OpenCV at 0; Harmony4D / EgoHumans
      use the values unchanged with cv2, and so do we, so projections match the dataset's 2D annotations).
    * units are COLMAP's (arbitrary scale) unless a similarity is applied (`primary`).

Harmony4D (`read_harmony4d(sequence_dir)`), PIPELINE.md section 2:
    `<seq>/colmap/workplace/{cameras,images}.txt` and either `scale.npy` (exo-only sequences: a 4x4 similarity
    S with X_metric = S @ X_colmap) or `colmap_from_aria_transforms.pkl` (dict person -> 4x4 similarity with
    X_colmap = T @ X_aria; the world is `aria01`'s). The dataset's world-to-camera extrinsic is

        E = [R | t] @ primary,   primary = inv(S)  or  colmap_from_aria['aria01'],

    i.e. primary maps metric world points into COLMAP's frame. `primary` contains a scale s, so E's 3x3 block
    A = s R Q is not orthonormal (det = s^3, about 1.18 in the dataset): normalized image coordinates are right,
    but camera-space points are in COLMAP units. This reader divides the scale out:

        R_metric = A / s,  t_metric = E[:3, 3] / s,   s = cbrt(det A),

    which is the same camera (identical pixels for every world point) with an orthonormal rotation and camera
    coordinates in metres. Ego (Aria, `aria*`) images move per frame and are skipped by default.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from h4djax.errors import CalibrationError
from h4djax.geometry.cameras import Cameras
from h4djax.io._validate import assemble, camera_record, records_of

# COLMAP model -> (fisheye, function params -> (fx, fy, cx, cy, dist)).
_MODELS = {
    "SIMPLE_PINHOLE": (False, lambda p: (p[0], p[0], p[1], p[2], [])),
    "PINHOLE": (False, lambda p: (p[0], p[1], p[2], p[3], [])),
    "SIMPLE_RADIAL": (False, lambda p: (p[0], p[0], p[1], p[2], [p[3], 0, 0, 0])),
    "RADIAL": (False, lambda p: (p[0], p[0], p[1], p[2], [p[3], p[4], 0, 0])),
    "OPENCV": (False, lambda p: (p[0], p[1], p[2], p[3], list(p[4:8]))),
    # FULL_OPENCV params: fx fy cx cy k1 k2 p1 p2 k3 k4 k5 k6 -- the same order as our dist.
    "FULL_OPENCV": (False, lambda p: (p[0], p[1], p[2], p[3], list(p[4:12]))),
    "OPENCV_FISHEYE": (True, lambda p: (p[0], p[1], p[2], p[3], list(p[4:8]))),
}

#: Two images of one static camera must agree to this (rotation entries, translation in model units).
_AGREE_TOL = 1e-6


def _load_reconstruction(model_dir: Path):
    import pycolmap

    try:
        return _load_reconstruction_unchecked(model_dir, pycolmap)
    except (ValueError, RuntimeError) as e:  # pycolmap's parse failures ("Check failed: ...")
        raise CalibrationError(model_dir, None, None, f"cannot parse the COLMAP model ({e})") from None


def _load_reconstruction_unchecked(model_dir: Path, pycolmap):
    files = {p.name for p in model_dir.iterdir()} if model_dir.is_dir() else set()
    if {"cameras.bin", "images.bin"} <= files:
        return pycolmap.Reconstruction(str(model_dir)), model_dir / "images.bin"
    if {"cameras.txt", "images.txt"} <= files:
        if "points3D.txt" in files:
            return pycolmap.Reconstruction(str(model_dir)), model_dir / "images.txt"
        # pycolmap insists on points3D.txt; calibration-only exports (Harmony4D) do not ship one.
        with tempfile.TemporaryDirectory() as tmp:
            for f in ("cameras.txt", "images.txt", "rigs.txt", "frames.txt"):
                if f in files:
                    shutil.copy(model_dir / f, Path(tmp) / f)
            (Path(tmp) / "points3D.txt").write_text("")
            return pycolmap.Reconstruction(tmp), model_dir / "images.txt"
    raise CalibrationError(model_dir, None, None, "not a COLMAP model: expected cameras.txt + images.txt or "
                           "cameras.bin + images.bin")


def _pose(image) -> tuple[np.ndarray, np.ndarray, float]:
    """(R, t, |q|) of an image's world -> camera pose; the quaternion is renormalized (pycolmap does not)."""
    pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    q = np.asarray(pose.rotation.quat, dtype=np.float64)  # x, y, z, w
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm == 0:
        return np.full((3, 3), np.nan), np.asarray(pose.translation, dtype=np.float64), norm
    return Rotation.from_quat(q / norm).as_matrix(), np.asarray(pose.translation, dtype=np.float64), norm


def read_colmap(
    model_dir: str | Path,
    primary: np.ndarray | None = None,
    skip: tuple[str, ...] = (),
    source: str | Path | None = None,
) -> Cameras:
    """Read a COLMAP model (text or binary) as static cameras, sorted by camera name.

    primary: optional 4x4 similarity mapping world points into COLMAP's frame (see the module docstring); its
        scale is divided out so the result is metric and orthonormal. skip: camera-name prefixes to ignore.
    source: file named in errors (default: the images file).
    """
    model_dir = Path(model_dir)
    rec, images_file = _load_reconstruction(model_dir)
    src = Path(source) if source is not None else images_file
    cam_file = model_dir / ("cameras.bin" if images_file.suffix == ".bin" else "cameras.txt")
    primary = None if primary is None else _similarity(src, primary)
    first: dict[str, tuple] = {}
    for image_id in sorted(rec.images):
        image = rec.images[image_id]
        name = image.name.replace("\\", "/").split("/")[0]
        if any(name.startswith(p) for p in skip):
            continue
        if not image.has_pose:
            continue
        camera = rec.cameras[image.camera_id]
        model = camera.model.name
        if model not in _MODELS:
            raise CalibrationError(cam_file, name, "model", f"unsupported COLMAP camera model {model!r}; supported: "
                                   f"{sorted(_MODELS)}")
        params = np.asarray(camera.params, dtype=np.float64)
        R, t, qnorm = _pose(image)
        if not np.isfinite(params).all():
            raise CalibrationError(cam_file, name, "params", "contains NaN or infinite values")
        if not (np.isfinite(t).all() and np.isfinite(qnorm)) or abs(qnorm - 1) > 1e-3:
            raise CalibrationError(src, name, "qvec" if np.isfinite(t).all() else "tvec",
                                   f"image {image.name!r}: pose is not finite or its quaternion is not unit "
                                   f"(|q| = {qnorm:.6g})")
        entry = (model, params, R, t, (camera.width, camera.height), image.name)
        if name in first:
            m0, p0, R0, t0, s0, n0 = first[name]
            if m0 != model or s0 != entry[4] or not np.allclose(p0, params, atol=_AGREE_TOL, rtol=0) or \
                    np.abs(R0 - R).max() > _AGREE_TOL or np.abs(t0 - t).max() > _AGREE_TOL:
                raise CalibrationError(src, name, "images", f"images {n0!r} and {image.name!r} share camera name "
                                       f"{name!r} but disagree: cameras must be static")
            continue
        first[name] = entry
    records = []
    for name in sorted(first):
        model, params, R, t, size, _ = first[name]
        fisheye, unpack = _MODELS[model]
        fx, fy, cx, cy, dist = unpack(params)
        if primary is not None:
            R, t = _apply_primary(R, t, primary)
        records.append(camera_record(
            src, name, K=[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dist=dist, R=R, t=t, size=size,
            fisheye=fisheye, fields={"K": "params", "dist": "params", "R": "qvec", "t": "tvec", "size": "width/height"},
        ))
    return assemble(src, records)


def _similarity(file: Path, M: np.ndarray) -> np.ndarray:
    try:
        M = np.asarray(M, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(file, None, "primary", f"expected a 4x4 similarity transform, got {M!r}") from None
    if M.shape != (4, 4):
        raise CalibrationError(file, None, "primary", f"expected a 4x4 similarity transform, got shape {M.shape}")
    if not np.isfinite(M).all():
        raise CalibrationError(file, None, "primary", "contains NaN or infinite values")
    if not np.allclose(M[3], [0, 0, 0, 1], atol=1e-9):
        raise CalibrationError(file, None, "primary", f"last row must be [0, 0, 0, 1], got {M[3].tolist()}")
    A = M[:3, :3]
    det = np.linalg.det(A)
    if det <= 0:
        raise CalibrationError(file, None, "primary", f"similarity has non-positive determinant {det:.6g}")
    s = np.cbrt(det)
    err = np.abs(A @ A.T / s**2 - np.eye(3)).max()
    if err > 1e-4:
        raise CalibrationError(file, None, "primary", f"not a similarity (rotation x scale): max |A A^T / s^2 - I| "
                               f"= {err:.3g}")
    return M


def _apply_primary(R: np.ndarray, t: np.ndarray, primary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E = [R|t] @ primary, then divide out the similarity scale (module docstring)."""
    E = np.concatenate([R, t[:, None]], axis=1) @ primary
    A = E[:, :3]
    s = np.cbrt(np.linalg.det(A))
    Rm = A / s
    # Project onto SO(3) (polar decomposition) to remove the rounding of the stored similarity; the change is at
    # the 1e-4 level at most (checked in _similarity) and does not move pixels beyond that.
    U, _, Vt = np.linalg.svd(Rm)
    Rm = U @ Vt
    return Rm, E[:, 3] / s


def read_harmony4d(sequence_dir: str | Path, skip: tuple[str, ...] = ("aria",)) -> Cameras:
    """Read a Harmony4D sequence's exo cameras as metric, orthonormal world -> camera cameras (module docstring)."""
    seq = Path(sequence_dir)
    work = seq / "colmap" / "workplace"
    if not work.is_dir():
        work = seq if (seq / "images.txt").exists() or (seq / "images.bin").exists() else work
    if not work.is_dir():
        raise CalibrationError(seq, None, None, "not a Harmony4D sequence: no colmap/workplace folder")
    scale_file, aria_file = work / "scale.npy", work / "colmap_from_aria_transforms.pkl"
    if scale_file.exists():
        try:
            # The dataset's own tools load it with allow_pickle=True; any failure means a corrupt file.
            S = np.load(scale_file, allow_pickle=True)
        except Exception as e:  # noqa: BLE001
            raise CalibrationError(scale_file, None, None, f"cannot read ({e})") from None
        S = _similarity(scale_file, S)
        primary = np.linalg.inv(S)
    elif aria_file.exists():
        try:
            with aria_file.open("rb") as fh:
                transforms = pickle.load(fh)
        except Exception as e:  # noqa: BLE001 -- any unpickling failure is a corrupt file for the user
            raise CalibrationError(aria_file, None, None, f"cannot read ({e})") from None
        if not isinstance(transforms, dict) or "aria01" not in transforms:
            raise CalibrationError(aria_file, None, "aria01", "expected a dict with the 'aria01' transform")
        primary = _similarity(aria_file, transforms["aria01"])
    else:
        warnings.warn(f"{work}: neither scale.npy nor colmap_from_aria_transforms.pkl; cameras stay in COLMAP's "
                      "arbitrary (non-metric) units", stacklevel=2)
        primary = None
    return read_colmap(work, primary=primary, skip=skip)


def write_colmap_text(cams: Cameras, out_dir: str | Path, primary: np.ndarray | None = None) -> None:
    """Write cameras as a COLMAP text model (cameras.txt, images.txt; one image `NAME/00001.jpg` per camera).

    With `primary` (4x4 similarity, world -> COLMAP frame) the poses are expressed in COLMAP's frame, i.e. the
    inverse of what `read_harmony4d` undoes: [R_c | t_c] = s [R | t] @ inv(primary) for s = cbrt(det primary).
    Used to build Harmony4D-layout fixtures; opencv cameras are written as FULL_OPENCV, fisheye as OPENCV_FISHEYE.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, r in enumerate(records_of(cams), start=1):
        K = r.K
        if r.fisheye:
            params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], *r.dist[:4]]
            model = "OPENCV_FISHEYE"
        else:
            params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], *r.dist[:8]]
            model = "FULL_OPENCV"
        cam_lines.append(f"{i} {model} {int(r.size[0])} {int(r.size[1])} " + " ".join(repr(float(p)) for p in params))
        E = np.concatenate([r.R, r.t[:, None]], axis=1)
        if primary is not None:
            s = np.cbrt(np.linalg.det(primary[:3, :3]))
            E = s * (np.concatenate([E, [[0, 0, 0, 1]]]) @ np.linalg.inv(primary))[:3]
        qx, qy, qz, qw = Rotation.from_matrix(E[:, :3]).as_quat()
        vals = [qw, qx, qy, qz, *E[:, 3]]
        img_lines.append(f"{i} " + " ".join(repr(float(v)) for v in vals) + f" {i} {r.name}/00001.jpg")
        img_lines.append("")
    (out / "cameras.txt").write_text("\n".join(cam_lines) + "\n")
    (out / "images.txt").write_text("\n".join(img_lines) + "\n")
