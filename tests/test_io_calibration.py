"""Calibration readers: real Pose2Sim / Qualisys files, cameras.toml round trip, COLMAP (text + binary, every
supported model against pycolmap's own projection), the Harmony4D similarity convention, and bad input."""

import pickle
import re
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from h4djax.errors import CalibrationError
from h4djax.geometry import Cameras
from h4djax.geometry.cameras_np import camera_centers_np, project_np
from h4djax.io import (
    read_cameras,
    read_cameras_toml,
    read_colmap,
    read_harmony4d,
    read_pose2sim_toml,
    read_qualisys_qca,
    write_cameras_toml,
    write_colmap_text,
)

DATA = Path("/work/shared/data/pose2sim_demo/calibration")
needs_data = pytest.mark.skipif(not DATA.exists(), reason="shared Pose2Sim demo data not present")


def random_rig(rng, n=5, fisheye=None, metres=True) -> Cameras:
    """Host rig: cameras on a 4 m circle looking at the origin, mixed models, awkward float values."""
    fisheye = np.array([i % 2 == 1 for i in range(n)]) if fisheye is None else np.broadcast_to(fisheye, (n,))
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = rng.uniform(800, 2000, n)
    K[:, 1, 1] = K[:, 0, 0] * rng.uniform(0.99, 1.01, n)
    K[:, 0, 2] = rng.uniform(900, 1000, n)
    K[:, 1, 2] = rng.uniform(500, 600, n)
    K[:, 2, 2] = 1
    dist = np.zeros((n, 8))
    for c in range(n):
        if fisheye[c]:
            dist[c, :4] = rng.normal(scale=0.02, size=4)
        else:
            k = (4, 5, 8)[c % 3]
            dist[c, :k] = rng.normal(scale=0.02, size=k)
    R, t = [], []
    for c in range(n):
        a = 2 * np.pi * c / n
        center = np.array([4 * np.cos(a), 4 * np.sin(a), 1.5 + rng.uniform(-0.2, 0.2)])
        z = -center / np.linalg.norm(center)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        Rc = np.stack([x, y, z])
        R.append(Rc)
        t.append(-Rc @ center)
    size = np.stack([np.full(n, 1920), np.full(n, 1080)], -1)
    return Cameras(K=K, dist=dist, R=np.stack(R), t=np.stack(t), size=size, fisheye=np.asarray(fisheye),
                   names=tuple(f"cam{c + 1:02d}" for c in range(n)))


def assert_same_rig(a: Cameras, b: Cameras, atol=0.0):
    assert a.names == b.names
    for f in ("K", "dist", "R", "t", "size", "fisheye"):
        np.testing.assert_allclose(np.asarray(getattr(a, f), float), np.asarray(getattr(b, f), float), atol=atol,
                                   rtol=0, err_msg=f)


# ----------------------------------------------------------------------------------------------- real Pose2Sim


@needs_data
def test_pose2sim_toml_and_qualisys_are_the_same_rig():
    toml = read_cameras(DATA / "Calib_qualisys.toml")
    qca = read_cameras(DATA / "Calib.qca.txt")
    assert toml.names == ("cam_01", "cam_02", "cam_03", "cam_04")
    assert_same_rig(toml, qca, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(toml.size), [[1088, 1920]] * 4)
    assert not np.asarray(toml.fisheye).any()
    for R in np.asarray(qca.R):
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) > 0
    # Camera centres are the Qualisys x, y, z (mm) / 1000, read independently from the XML text.
    xyz = re.findall(r'<transform [^>]*x="([^"]+)" y="([^"]+)" z="([^"]+)"', (DATA / "Calib.qca.txt").read_text())
    np.testing.assert_allclose(camera_centers_np(qca), np.array(xyz, float) / 1000, atol=1e-12)
    # The rig looks inward: every camera sees the rig centre (floor level) in front of it and inside the image.
    uv, ok = project_np(qca, camera_centers_np(qca).mean(0) * [1, 1, 0])
    assert ok.all()
    assert ((uv > 0) & (uv < np.asarray(qca.size))).all()


@needs_data
def test_pose2sim_values_match_the_file():
    cams = read_pose2sim_toml(DATA / "Calib_qualisys.toml")
    np.testing.assert_allclose(cams.K[0, 0, 0], 1681.244873046875)
    np.testing.assert_allclose(cams.dist[0, :4], [-0.000721609375, 0.002187234375, 9.5e-06, 1.078125e-05])
    np.testing.assert_allclose(cams.R[0], Rotation.from_rotvec([1.68827548, 1.04832205, -0.41955852]).as_matrix(),
                               atol=1e-8)


# ----------------------------------------------------------------------------------------------- cameras.toml


def test_cameras_toml_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    cams = random_rig(rng, 6)
    cams = cams.replace(names=("cam01", "left cam/1", "cam.3", "x", "kamera_ä", "-"))
    write_cameras_toml(cams, tmp_path / "cameras.toml")
    back = read_cameras(tmp_path / "cameras.toml")
    assert_same_rig(cams, back, atol=0.0)  # bit-exact (repr floats)
    # Twice round-tripped text is identical.
    write_cameras_toml(back, tmp_path / "again.toml")
    assert (tmp_path / "again.toml").read_text() == (tmp_path / "cameras.toml").read_text()
    # Coefficient counts are trimmed per the format: 4 / 5 / 8 for opencv, 4 for fisheye.
    text = (tmp_path / "cameras.toml").read_text()
    counts = [len(m.split(",")) for m in re.findall(r"^dist = \[(.*)\]$", text, flags=re.M)]
    assert counts == [4, 4, 8, 4, 5, 4]


def test_cameras_toml_reads_the_formats_example(tmp_path):
    p = tmp_path / "cameras.toml"
    p.write_text("""
[cam01]
size = [1920, 1080]
model = "opencv"
K = [[1000.0, 0, 960], [0, 1000, 540], [0, 0, 1]]
dist = [0.1, -0.01, 0.001, 0.002, 0.0005]
R = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
t = [0.0, 0.0, 3.0]
""")
    cams = read_cameras(p)
    assert cams.names == ("cam01",)
    np.testing.assert_array_equal(cams.dist[0], [0.1, -0.01, 0.001, 0.002, 0.0005, 0, 0, 0])
    assert cams.size.dtype == np.int64 and cams.K.dtype == np.float64


GOOD = """[cam01]
size = [1920, 1080]
model = "{model}"
K = [[1000.0, 0, 960], [0, 1000, 540], [0, 0, 1]]
dist = {dist}
R = {R}
t = [0.0, 0.0, 3.0]
"""


@pytest.mark.parametrize(
    "change,field,what",
    [
        (("t = [0.0, 0.0, 3.0]\n", ""), "t", "missing"),
        (("model = \"opencv\"", "model = \"kannala\""), "model", "unknown camera model"),
        (("[[1, 0, 0], [0, 1, 0], [0, 0, 1]]", "[[1.1, 0, 0], [0, 1, 0], [0, 0, 1]]"), "R", "not orthonormal"),
        (("[[1, 0, 0], [0, 1, 0], [0, 0, 1]]", "[[-1, 0, 0], [0, 1, 0], [0, 0, 1]]"), "R", "reflection"),
        (("[[1000.0, 0, 960]", "[[nan, 0, 960]"), "K", "NaN"),
        (("t = [0.0, 0.0, 3.0]", "t = [0.0, inf, 3.0]"), "t", "NaN"),
        (("dist = [0.1, 0.0, 0.0, 0.0]", "dist = [0.1, 0.0, 0.0]"), "dist", "coefficients"),
        (("size = [1920, 1080]", "size = [1920]"), "size", "shape"),
        (("t = [0.0, 0.0, 3.0]", "t = [0.0, 0.0, 3.0]\ndistortion = [0.0]"), "distortion", "unknown key"),
        (("t = [0.0, 0.0, 3.0]", "t = [0.0, 0.0, \"3\"]"), "t", "expected"),
    ],
)
def test_cameras_toml_bad_input_names_file_camera_field(tmp_path, change, field, what):
    text = GOOD.format(model="opencv", dist="[0.1, 0.0, 0.0, 0.0]", R="[[1, 0, 0], [0, 1, 0], [0, 0, 1]]")
    assert change[0] in text
    p = tmp_path / "bad.toml"
    p.write_text(text.replace(change[0], change[1]))
    with pytest.raises(CalibrationError) as e:
        read_cameras_toml(p)
    assert e.value.file == str(p) and e.value.camera == "cam01" and e.value.field == field
    assert what in str(e.value) and str(p) in str(e.value) and "cam01" in str(e.value)


def test_fisheye_needs_four_coefficients(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(GOOD.format(model="fisheye", dist="[0.1, 0.0, 0.0, 0.0, 0.2]", R="[[1, 0, 0], [0, 1, 0], [0, 0, 1]]"))
    with pytest.raises(CalibrationError, match="dist"):
        read_cameras(p)


def test_not_toml_and_unknown_files(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("[cam01\nsize=")
    with pytest.raises(CalibrationError, match="not valid TOML"):
        read_cameras(p)
    with pytest.raises(CalibrationError, match="no such file"):
        read_cameras(tmp_path / "missing.toml")
    (tmp_path / "calib.yaml").write_text("a: 1")
    with pytest.raises(CalibrationError, match="unknown calibration file type"):
        read_cameras(tmp_path / "calib.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no calibration found"):
        read_cameras(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- Pose2Sim / qca bad


@needs_data
def test_pose2sim_and_qca_bad_input(tmp_path):
    text = (DATA / "Calib_qualisys.toml").read_text()
    p = tmp_path / "Calib.toml"
    p.write_text(text.replace("translation = [ -0.11152829000000014", "translatio = [ -0.11152829000000014"))
    with pytest.raises(CalibrationError) as e:
        read_cameras(p)
    assert (e.value.camera, e.value.field) == ("cam_02", "translation")
    p.write_text(text.replace("1.34975875,", "nan,"))
    with pytest.raises(CalibrationError) as e:
        read_cameras(p)
    assert (e.value.camera, e.value.field) == ("cam_02", "rotation")
    qca = (DATA / "Calib.qca.txt").read_text()
    q = tmp_path / "bad.qca.txt"
    q.write_text(qca.replace('focalLengthV="107123.023438"', 'focalLengthV="abc"'))
    with pytest.raises(CalibrationError) as e:
        read_cameras(q)
    assert (e.value.camera, e.value.field) == ("cam_02", "intrinsic.focalLengthV")
    q.write_text(qca.replace('r11="-0.1966832217091926"', 'r11="-0.3"'))
    with pytest.raises(CalibrationError) as e:
        read_qualisys_qca(q)
    assert (e.value.camera, e.value.field) == ("cam_02", "transform")
    q.write_text(qca[:500])
    with pytest.raises(CalibrationError, match="not valid Qualisys XML"):
        read_cameras(q)


# ----------------------------------------------------------------------------------------------- COLMAP


def _pycolmap_project(cam: pycolmap.Camera, Xc: np.ndarray) -> np.ndarray:
    return np.array([np.asarray(cam.img_from_cam(x / x[2])).reshape(-1)[:2] for x in Xc])


@pytest.mark.parametrize(
    "model,params",
    [
        ("SIMPLE_PINHOLE", [1500.0, 960.0, 540.0]),
        ("PINHOLE", [1500.0, 1510.0, 960.0, 540.0]),
        ("SIMPLE_RADIAL", [1500.0, 960.0, 540.0, -0.05]),
        ("RADIAL", [1500.0, 960.0, 540.0, -0.05, 0.01]),
        ("OPENCV", [1500.0, 1510.0, 960.0, 540.0, -0.05, 0.01, 0.001, -0.002]),
        ("FULL_OPENCV", [1500.0, 1510.0, 960.0, 540.0, -0.05, 0.01, 0.001, -0.002, 0.003, 0.01, -0.02, 0.004]),
        ("OPENCV_FISHEYE", [1500.0, 1510.0, 960.0, 540.0, 0.02, -0.01, 0.003, -0.001]),
    ],
)
def test_colmap_models_match_pycolmap_projection(tmp_path, model, params):
    rng = np.random.default_rng(1)
    q = [float(v) for v in Rotation.random(random_state=3).as_quat()]  # x y z w
    t = [0.1, -0.2, 4.0]
    (tmp_path / "cameras.txt").write_text(f"1 {model} 1920 1080 " + " ".join(map(repr, params)) + "\n")
    (tmp_path / "images.txt").write_text(
        f"1 {q[3]!r} {q[0]!r} {q[1]!r} {q[2]!r} {t[0]} {t[1]} {t[2]} 1 camA/000001.jpg\n\n")
    cams = read_colmap(tmp_path)
    assert cams.names == ("camA",)
    assert bool(cams.fisheye[0]) == (model == "OPENCV_FISHEYE")
    X = rng.uniform(-1, 1, size=(30, 3))
    uv, ok = project_np(cams, X)
    assert ok.all()
    cam = pycolmap.Camera.create_from_model_name(1, model, 1500.0, 1920, 1080)
    cam.params = params
    Xc = X @ Rotation.from_quat(q).as_matrix().T + t
    np.testing.assert_allclose(uv[0], _pycolmap_project(cam, Xc), atol=1e-6)
    assert not (tmp_path / "points3D.txt").exists()  # the reader needs none and writes nothing into the model


def test_colmap_text_and_binary_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    cams = random_rig(rng, 4)
    write_colmap_text(cams, tmp_path / "txt")
    a = read_cameras(tmp_path / "txt")
    assert_same_rig(cams, a, atol=1e-9)
    (tmp_path / "txt" / "points3D.txt").write_text("")
    rec = pycolmap.Reconstruction(str(tmp_path / "txt"))
    (tmp_path / "bin").mkdir()
    rec.write_binary(str(tmp_path / "bin"))
    b = read_cameras(tmp_path / "bin")
    assert_same_rig(cams, b, atol=1e-9)


def _images_line(i, R, t, cam_id, name):
    q = [float(v) for v in Rotation.from_matrix(R).as_quat()]
    t = [float(v) for v in t]
    return f"{i} {q[3]!r} {q[0]!r} {q[1]!r} {q[2]!r} {t[0]!r} {t[1]!r} {t[2]!r} {cam_id} {name}\n\n"


def test_colmap_many_images_per_camera(tmp_path):
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 640 480 500 500 320 240\n")
    R, t = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(), np.array([0.1, 0.2, 3.0])
    (tmp_path / "images.txt").write_text(
        _images_line(1, R, t, 1, "cam01/0001.jpg") + _images_line(2, R, t, 1, "cam01/0002.jpg"))
    cams = read_colmap(tmp_path)
    assert cams.names == ("cam01",)
    np.testing.assert_allclose(cams.R[0], R, atol=1e-12)
    (tmp_path / "images.txt").write_text(
        _images_line(1, R, t, 1, "cam01/0001.jpg") + _images_line(2, R, t + 0.01, 1, "cam01/0002.jpg"))
    with pytest.raises(CalibrationError, match="static") as e:
        read_colmap(tmp_path)
    assert e.value.camera == "cam01"


def test_colmap_unknown_model_and_bad_quaternion(tmp_path):
    (tmp_path / "cameras.txt").write_text("1 FOV 640 480 500 500 320 240 0.1\n")
    R, t = np.eye(3), np.zeros(3)
    (tmp_path / "images.txt").write_text(_images_line(1, R, t, 1, "cam07/a.jpg"))
    with pytest.raises(CalibrationError) as e:
        read_cameras(tmp_path)
    assert (e.value.camera, e.value.field) == ("cam07", "model") and "FOV" in str(e.value)
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 640 480 500 500 320 240\n")
    (tmp_path / "images.txt").write_text("1 0.5 0.0 0.0 0.0 0 0 0 1 cam07/a.jpg\n\n")
    with pytest.raises(CalibrationError) as e:
        read_cameras(tmp_path)
    assert (e.value.camera, e.value.field) == ("cam07", "qvec")


# ----------------------------------------------------------------------------------------------- Harmony4D


def _similarity(rng, s):
    M = np.eye(4)
    M[:3, :3] = s * Rotation.random(random_state=rng.integers(1 << 30)).as_matrix()
    M[:3, 3] = rng.normal(size=3)
    return M


def _write_harmony4d(seq: Path, cams: Cameras, to_colmap: np.ndarray, with_aria: bool = True):
    """COLMAP files of metric `cams` in the frame X_colmap = to_colmap @ X_metric, derived independently of the
    reader: for X_metric = S X_colmap (S = inv(to_colmap) = [sQ | T]), x_metric_cam = s R Q X_colmap + R T + t, so
    the COLMAP-unit camera is R_c = R Q, t_c = (R T + t) / s."""
    work = seq / "colmap" / "workplace"
    work.mkdir(parents=True)
    S = np.linalg.inv(to_colmap)
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    Q, T = S[:3, :3] / s, S[:3, 3]
    cam_lines, img_lines = [], []
    for i, name in enumerate(cams.names, start=1):
        K, d = cams.K[i - 1], cams.dist[i - 1]
        cam_lines.append(f"{i} OPENCV_FISHEYE 3840 2160 "
                         + " ".join(repr(float(x)) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2], *d[:4])))
        R, t = cams.R[i - 1], cams.t[i - 1]
        img_lines.append(_images_line(i, R @ Q, (R @ T + t) / s, i, f"{name}/00001.jpg"))
    if with_aria:  # a moving ego camera: several disagreeing images, skipped by the Harmony4D reader
        n = len(cams.names) + 1
        cam_lines.append(f"{n} OPENCV_FISHEYE 1408 1408 600 600 704 704 0 0 0 0")
        for k in range(3):
            img_lines.append(_images_line(n + k, Rotation.from_rotvec([0, 0, 0.1 * k]).as_matrix(), [k, 0, 0], n,
                                          f"aria01/{k:05d}.jpg"))
    (work / "cameras.txt").write_text("# Camera list\n" + "\n".join(cam_lines) + "\n")
    (work / "images.txt").write_text("# Image list\n" + "".join(img_lines))
    return work


@pytest.mark.parametrize("source", ["scale", "aria"])
def test_harmony4d_reader_is_metric_and_exact(tmp_path, source):
    rng = np.random.default_rng(5)
    cams = random_rig(rng, 6, fisheye=True)
    cams = cams.replace(size=np.tile([3840, 2160], (6, 1)))
    to_colmap = _similarity(rng, 1 / 1.375482)  # the dataset's scale, PIPELINE.md section 2
    work = _write_harmony4d(tmp_path / "seq", cams, to_colmap)
    if source == "scale":
        np.save(work / "scale.npy", np.linalg.inv(to_colmap))  # X_metric = S @ X_colmap
    else:
        with (work / "colmap_from_aria_transforms.pkl").open("wb") as f:
            pickle.dump({"aria01": to_colmap, "aria02": _similarity(rng, 0.9)}, f)
    back = read_cameras(tmp_path / "seq")
    assert_same_rig(cams, back, atol=1e-9)
    for R in back.R:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    # Independent check with pycolmap's own projection of the same points in COLMAP's frame.
    X = rng.uniform(-1, 1, size=(20, 3))
    Xh = np.c_[X, np.ones(len(X))] @ to_colmap.T
    rec = read_colmap(work, skip=("aria",))  # raw COLMAP-unit cameras
    uv, _ = project_np(back, X)
    uv_colmap, _ = project_np(rec, Xh[:, :3])
    np.testing.assert_allclose(uv, uv_colmap, atol=1e-6)
    cam = pycolmap.Camera.create_from_model_name(1, "OPENCV_FISHEYE", 1.0, 3840, 2160)
    cam.params = [*back.K[0, [0, 1], [0, 1]], *back.K[0, :2, 2], *back.dist[0, :4]]
    Xc = Xh[:, :3] @ rec.R[0].T + rec.t[0]
    np.testing.assert_allclose(uv[0], _pycolmap_project(cam, Xc), atol=1e-6)
    # Camera-space points are metric: depths equal the metric distance along the optical axis.
    depth_metric = (X - camera_centers_np(cams)[0]) @ cams.R[0, 2]
    np.testing.assert_allclose((X @ back.R[0].T + back.t[0])[:, 2], depth_metric, atol=1e-9)


def test_harmony4d_bad_similarity_and_missing(tmp_path):
    rng = np.random.default_rng(6)
    cams = random_rig(rng, 2, fisheye=True)
    work = _write_harmony4d(tmp_path / "seq", cams, np.eye(4), with_aria=False)
    np.save(work / "scale.npy", np.diag([1.0, 2.0, 1.0, 1.0]))  # anisotropic: not a similarity
    with pytest.raises(CalibrationError) as e:
        read_harmony4d(tmp_path / "seq")
    assert e.value.file == str(work / "scale.npy") and "similarity" in str(e.value)
    (work / "scale.npy").write_bytes(b"garbage")
    with pytest.raises(CalibrationError, match="scale.npy"):
        read_harmony4d(tmp_path / "seq")
    (work / "scale.npy").unlink()
    with pytest.warns(UserWarning, match="non-metric"):
        read_harmony4d(tmp_path / "seq")
