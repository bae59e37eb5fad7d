"""`h4d calib show / convert` on the real Pose2Sim calibration."""

from pathlib import Path

import numpy as np
import pytest

from h4djax.cli import main
from h4djax.commands.calib import world_up
from h4djax.geometry.cameras_np import camera_centers_np
from h4djax.io import read_cameras

CALIB = Path("/work/shared/data/pose2sim_demo/calibration/Calib_qualisys.toml")
needs_data = pytest.mark.skipif(not CALIB.exists(), reason="shared Pose2Sim demo data not present")


@needs_data
def test_calib_show_table_and_png(tmp_path, capsys):
    png = tmp_path / "rig.png"
    assert main(["calib", "show", str(CALIB), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    cams = read_cameras(CALIB)
    centers = camera_centers_np(cams)
    dist = np.linalg.norm(centers - centers.mean(0), axis=1)
    rows = [line.split() for line in out.splitlines() if line.startswith("cam_")]
    assert [r[0] for r in rows] == list(cams.names)
    for r, K, d in zip(rows, cams.K, dist):
        assert r[1] == "opencv" and r[2] == "1088x1920"
        np.testing.assert_allclose([float(x) for x in r[3:7]], [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], atol=0.01)
        np.testing.assert_allclose(float(r[7]), d, atol=1e-3)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # The lab's world is z-up and the cameras look down at the subject.
    np.testing.assert_allclose(world_up(cams), [0, 0, 1], atol=0.05)


@needs_data
def test_calib_show_default_png_in_cwd(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["calib", "show", str(CALIB), "--up", "z"]) == 0
    assert (tmp_path / "Calib_qualisys_rig.png").exists()


@needs_data
def test_calib_convert_round_trip(tmp_path, capsys):
    out = tmp_path / "cameras.toml"
    assert main(["calib", "convert", str(CALIB.parent / "Calib.qca.txt"), str(out)]) == 0
    a, b = read_cameras(out), read_cameras(CALIB)
    for f in ("K", "dist", "R", "t"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), atol=1e-6)


def test_calib_errors_are_one_line(tmp_path, capsys):
    assert main(["calib", "show", str(tmp_path / "missing.toml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.toml" in err and "no such file" in err
