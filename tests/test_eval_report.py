"""`h4d eval`: the report on a result with a known error, from the files on disk (h4djax.eval.report)."""

import json

import numpy as np
import pytest

from h4djax.cli import main
from h4djax.eval.report import evaluate, format_table, load_ground_truth
from h4djax.geometry.cameras_np import project_np
from h4djax.io.capture import Capture, GroundTruth, write_capture
from h4djax.synth.config import RigConfig
from h4djax.synth.rig import make_rig

F, P, K = 12, 2, 17


@pytest.fixture()
def capture_dir(tmp_path):
    rng = np.random.default_rng(0)
    cams = make_rig(RigConfig(num_cameras=4), rng)
    gt = rng.normal(scale=0.3, size=(F, P, K, 3)) + np.array([0.0, 1.0, 0.0])
    gt[:, 1] += [0.6, 0.0, 0.0]
    uv, _ = project_np(cams, gt)  # [C, F, P, K, 2]
    kp = np.concatenate([np.moveaxis(uv, 0, 1), np.ones((F, 4, P, K, 1))], -1).astype(np.float32)
    gt_nan = gt.copy()
    gt_nan[0, 0, 0] = np.nan  # unknown ground truth: excluded everywhere
    write_capture(tmp_path / "cap", Capture(cameras=cams, keypoints=kp, fps=30.0,
                                            gt=GroundTruth(joints3d=gt_nan.astype(np.float32))))
    return tmp_path / "cap", gt


def test_eval_table_and_json_on_a_known_offset(capture_dir, tmp_path, capsys):
    cap, gt = capture_dir
    tri = np.concatenate([gt + [0.01, 0.0, 0.0], np.ones((F, P, K, 1))], -1)
    tri[3, 1, 5, 3] = 0.0  # one joint not triangulated: coverage drops, error ignores it
    refined = np.concatenate([gt + [0.0, 0.0, 0.004], np.ones((F, P, K, 1))], -1)
    res = tmp_path / "res"
    res.mkdir()
    np.savez(res / "result.npz", joints3d_triangulated=tri.astype(np.float32), joints3d=refined.astype(np.float32))
    assert main(["eval", str(res), str(cap), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "triangulated" in out and "refined" in out and "MPJPE" in out
    rep = json.loads((tmp_path / "e.json").read_text())
    t, r = rep["stages"]["triangulated"], rep["stages"]["refined"]
    assert t["mpjpe_mm"] == pytest.approx(10.0, abs=0.01)
    assert r["mpjpe_mm"] == pytest.approx(4.0, abs=0.01)
    assert t["pa_mpjpe_mm"] == pytest.approx(0.0, abs=0.01)  # a translation is removed by Procrustes
    assert t["accel_mm_f2"] == pytest.approx(0.0, abs=1e-3)
    n_gt = F * P * K - 1
    assert t["coverage_pct"] == pytest.approx(round(100 * (n_gt - 1) / n_gt, 1))
    # PCP: the untriangulated left shoulder makes its two limbs (upper arm, torso side) wrong in that frame.
    assert t["pcp_pct"] == pytest.approx(round(100 * (1 - 2 / (10 * F * P)), 1))
    assert len(t["per_joint_mm"]) == K and len(t["per_camera_px"]) == 4
    # Reprojection against the observed (exact) 2D keypoints: zero for a perfect estimate, > 0 for the offset.
    assert r["reproj_reference"] == "observed" and r["reproj_px"] > 0.5
    exact = evaluate({"joints3d": np.concatenate([gt, np.ones((F, P, K, 1))], -1)}, load_ground_truth(cap))
    assert exact["stages"]["refined"]["reproj_px"] == pytest.approx(0.0, abs=0.01)
    assert "refined" in format_table(exact)


def test_eval_errors_name_the_file(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing"), str(tmp_path / "nogt")]) == 1
    assert "missing: no such result directory or result.npz" in capsys.readouterr().err
