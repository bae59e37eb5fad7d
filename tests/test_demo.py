"""`h4d demo` and its stage registry (h4djax.eval.stages). The full default demo (every stage, 16 cameras, 150
frames) is `make demo`; here the registry and a reduced run of the same command are checked."""

import json

import numpy as np
import pytest

from h4djax.eval import stages as S


def test_registry_resolves_and_reports_missing_modules(monkeypatch):
    names = [s.name for s, ok, _ in S.resolve_stages()]
    assert names[:3] == ["triangulate", "refine", "fit"]
    reg = dict(S._REGISTRY)
    monkeypatch.setattr(S, "_REGISTRY", reg)
    S.register_stage(S.Stage("future", ("h4djax.not_written_yet",), lambda ctx: {}, ("fit",)))
    S.register_stage(S.Stage("after_future", ("h4djax.eval",), lambda ctx: {}, ("future",)))
    res = {s.name: (ok, why) for s, ok, why in S.resolve_stages()}
    assert res["future"][0] is False and "not_written_yet" in res["future"][1]
    assert res["after_future"] == (False, "needs stage(s) ['future']")
    # Replacing a stage keeps its position.
    S.register_stage(S.Stage("refine", ("h4djax.refine",), lambda ctx: {}, ("triangulate",)))
    assert [s.name for s in S.registered_stages()][:3] == ["triangulate", "refine", "fit"]


@pytest.fixture()
def only_triangulation(monkeypatch):
    """The registry with the real triangulation stage only (the refine and fit stages have their own tests and
    dominate the demo's run time)."""
    monkeypatch.setattr(S, "_REGISTRY", {"triangulate": S._REGISTRY["triangulate"]})


def test_demo_runs_stages_scores_them_and_draws(only_triangulation, tmp_path, capsys):
    from h4djax.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "24", "--cameras", "6", "--scenario", "hug"]) == 0
    text = capsys.readouterr().out
    assert "triangulated: MPJPE" in text and "ground-truth interpenetration" in text
    for name in ("capture/cameras.toml", "capture/keypoints2d.npz", "capture/gt.npz", "result/result.npz",
                 "result/report.json", "eval.json", "rig_3d.png", "views.png", "joint_error.png"):
        assert (out / name).exists(), name
    rep = json.loads((out / "eval.json").read_text())
    tri = rep["stages"]["triangulated"]
    # 6 cameras, hard noise, a hug: the robust triangulation is within a few centimetres of the truth.
    assert 5.0 < tri["mpjpe_mm"] < 50.0 and tri["coverage_pct"] > 80.0
    assert "triangulate" in rep["timings_s"] and "synth" in rep["timings_s"]
    with np.load(out / "result" / "result.npz") as z:
        assert z["joints3d_triangulated"].shape == (24, 2, 17, 4)
