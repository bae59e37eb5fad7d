"""Running the 2D front end over a capture (h4djax.detect.pipeline).

- The per-frame loop (ROIs from the projected 3D estimate, detector fallback, identity) with a scripted front end
  on a synthetic rig: the "detector" and "keypoint model" return the known projections of known people, so IDs,
  detector scheduling, people entering and tracks lost and found again are checked against ground truth.
- Helpers: tiles, ROI de-duplication, the cache hash, ensure_keypoints on unassociated detections.
- One short real-video run (3 frames of the Pose2Sim demo with the shipped BlazePose models): two people,
  consistent identities, reprojection, the keypoints2d.npz cache.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_associate import make_rig, observe, person, shuffle_views

from h4djax.config import Config, DetectConfig, FilterConfig
from h4djax.detect.blazepose import Detections, roi_from_coco17
from h4djax.detect.cards import ModelCard
from h4djax.detect.frontend import FrameKeypoints
from h4djax.detect.pipeline import (
    CACHE_FILE, CaptureDetector, _dedupe_rois, config_hash, detect_capture, ensure_keypoints, tile_offsets,
)
from h4djax.errors import CaptureError
from h4djax.io import Capture, read_capture, read_cameras, write_capture, write_cameras_toml

REPO = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/pose2sim_demo")
if not DATA.is_dir():  # CI runs on a copy of shared/ beside the clone
    DATA = REPO.parent / "shared/data/pose2sim_demo"


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def test_tile_offsets_cover_the_long_side():
    assert tile_offsets(1088, 1920, 3) == [(0, 0, 1088), (0, 416, 1088), (0, 832, 1088)]
    assert tile_offsets(1920, 1080, 2) == [(0, 0, 1080), (840, 0, 1080)]
    assert tile_offsets(1088, 1920, 1) == [(0, 416, 1088)]
    assert tile_offsets(1000, 1050, 3) == []  # nearly square: the whole frame is enough
    assert tile_offsets(1088, 1920, 0) == []


def test_dedupe_rois_keeps_best_of_each_person():
    rois = np.array([[500, 800, 1000, 1000, 0], [520, 790, 900, 900, 0.1],  # one person, full frame and tile
                     [800, 820, 1000, 1000, 0],  # another person beside (centre 300 px away)
                     [505, 805, 300, 300, 0]])  # much smaller box at the same place: not the same detection
    keep = _dedupe_rois(rois, np.array([0.8, 0.9, 0.7, 0.6]))
    assert keep.tolist() == [1, 2, 3]


def test_config_hash_tracks_what_changes_the_result(tmp_path):
    cams = make_rig(3)
    cap = Capture(cameras=cams, keypoints=None, joint_set="", associated=False, fps=0.0, media={})
    cfg, fc = DetectConfig(), FilterConfig()
    h0, blob = config_hash(cap, cfg, fc)
    assert json.loads(blob)["detect"]["assoc_max_dist"] == cfg.assoc_max_dist
    assert config_hash(cap, dataclasses.replace(cfg, threads=1, cache=False), fc)[0] == h0
    assert config_hash(cap, dataclasses.replace(cfg, assoc_max_dist=0.2), fc)[0] != h0
    assert config_hash(cap, cfg, dataclasses.replace(fc, oks_threshold=0.8))[0] != h0
    assert config_hash(cap, cfg, fc, frames=(0, 10))[0] != h0
    moved = dataclasses.replace(cap, cameras=cams.replace(t=cams.t + 0.01))
    assert config_hash(moved, cfg, fc)[0] != h0


def test_ensure_keypoints_associates_unassociated_detections(tmp_path):
    rig = make_rig(5, seed=3)
    rng = np.random.default_rng(0)
    F = 12
    kps, truths = [], []
    for f in range(F):
        X = np.stack([person((-0.5 + 0.02 * f, 0.0), 0.0, rng), person((0.6, 0.4 - 0.02 * f), 2.0, rng)])
        k, tr = shuffle_views(observe(rig, X, rng), rng, extra=1)
        kps.append(k)
        truths.append(tr)
    kp = np.stack(kps).astype(np.float32)
    write_capture(tmp_path, Capture(cameras=rig, keypoints=kp, joint_set="coco17", associated=False, fps=30.0))
    cap = read_capture(tmp_path)
    assert not cap.associated
    out = ensure_keypoints(cap, Config(detect=DetectConfig(min_track_frames=5)), progress=False)
    assert out.associated and out.keypoints.shape == (F, 5, 2, 17, 3)
    for p in range(2):  # every detection placed on person p belongs to one true person
        ids = set()
        for f in range(F):
            for c in range(5):
                k = out.keypoints[f, c, p]
                if k[:, 2].max() > 0:
                    j = np.argmin(np.abs(kp[f, c, :, :, :2] - k[None, :, :2]).max((1, 2)))
                    ids.add(int(truths[f][c, j]))
        assert len(ids) == 1
    assert ensure_keypoints(out, None) is out  # already associated: unchanged


# ---------------------------------------------------------------------------------------------------------------
# the per-frame loop with a scripted front end
# ---------------------------------------------------------------------------------------------------------------
class ScriptedFrontEnd:
    """Stands in for PoseFrontEnd. Images are tiny arrays carrying (frame, camera) in their first pixel; the
    "detector" finds the people listed as detectable in that view, the "keypoint model" returns the projection of
    the person whose ROI centre lies within a quarter ROI side of the given ROI's centre (score 0 otherwise)."""

    def __init__(self, truth_kp, detectable, visible):
        self.truth = truth_kp  # [F, C, P, 17, 3]
        self.detectable = detectable  # b[F, C, P]
        self.visible = visible  # b[F, C, P]
        self.kcard = ModelCard(kind="blazepose_landmark")
        self.detector_calls = []
        self.rois_of = lambda k: roi_from_coco17(k, min_conf=0.5)

    def _where(self, image):
        return int(image[0, 0, 0]), int(image[0, 0, 1])

    def detect(self, image):
        t, c = self._where(image)
        self.detector_calls.append((t, c))
        idx = np.flatnonzero(self.detectable[t, c] & self.visible[t, c])
        rois = self.rois_of(self.truth[t, c, idx])
        return Detections(boxes=np.zeros((len(idx), 4)), scores=np.full(len(idx), 0.9),
                          keypoints=np.zeros((len(idx), 4, 2)), rois=rois)

    def rois_from_keypoints(self, kpts, *, min_conf=0.3):
        return roi_from_coco17(kpts, min_conf=min_conf)

    def keypoints(self, image, rois, scores=None):
        t, c = self._where(image)
        rois = np.asarray(rois).reshape(-1, 5)
        gt = self.rois_of(self.truth[t, c])
        out = np.zeros((len(rois), 17, 3))
        sc = np.zeros(len(rois))
        for i, r in enumerate(rois):
            d = np.hypot(*(gt[:, :2] - r[:2]).T)
            d = np.where(self.visible[t, c] & np.isfinite(d), d, np.inf)
            j = int(np.argmin(d))
            if d[j] < 0.25 * r[2]:
                out[i] = self.truth[t, c, j]
                sc[i] = 0.95
        return FrameKeypoints(coco17=out, full=out, rois=rois, scores=sc)


def test_capture_loop_tracks_with_projected_rois_and_falls_back_to_the_detector():
    rig = make_rig(5, seed=1)
    rng = np.random.default_rng(2)
    F, C = 30, rig.num_cams
    X = np.zeros((F, 3, 17, 3))
    for f in range(F):
        X[f, 0] = person((-0.6 + 0.02 * f, 0.1), 0.0, rng)
        X[f, 1] = person((0.6 - 0.02 * f, -0.3), 2.5, rng)
        X[f, 2] = person((0.2, 1.5 - 0.02 * f), 4.0, rng)
    truth = np.stack([observe(rig, X[f], rng) for f in range(F)])  # [F, C, 3, 17, 3]
    visible = truth[..., 2].max(-1) > 0
    visible[:, :, 2] &= (np.arange(F) >= 8)[:, None]  # C enters at frame 8
    visible[14:17, :, 0] = False  # A disappears for 3 frames (occluded in every view)
    detectable = visible.copy()
    detectable[:5, :, 1] = False  # the detector misses B at first: its ROI tracking never starts before frame 5
    front = ScriptedFrontEnd(truth, detectable, visible)
    cfg = DetectConfig(tiles=0, redetect_every=5, max_people=0, min_track_frames=5)
    det = CaptureDetector(rig, front, cfg, FilterConfig(), fps=30.0)
    for t in range(F):
        images = [np.array([[[t, c, 0]]], np.uint8) for c in range(C)]
        det.step(t, images)
    res = det.finish()
    # Detector frames: 0, redetect every 5, and right after a tracked person is lost (A at frame 14 -> 15).
    det_frames = sorted({t for t, _ in front.detector_calls})
    assert {0, 5, 10, 15, 20, 25} <= set(det_frames)
    assert len(det_frames) <= 12, det_frames  # mostly tracking by projected ROIs
    # Identity: each output person is one true person; A keeps its id across its 3-frame absence.
    assert res.keypoints.shape[2] == 3
    owner = {}
    for p in range(3):
        ids = set()
        for f in range(F):
            for c in range(C):
                k = res.keypoints[f, c, p]
                if k[:, 2].max() > 0:
                    d = np.abs(truth[f, c, :, :, :2] - k[None, :, :2]).max((1, 2))
                    ids.add(int(np.argmin(d)))
        assert len(ids) == 1, ids
        owner[p] = ids.pop()
    inv = {v: k for k, v in owner.items()}
    assert sorted(inv) == [0, 1, 2]
    frames_of = {q: set(np.flatnonzero(res.n_views[:, inv[q]] >= 2)) for q in range(3)}
    assert frames_of[0] == set(range(F)) - {14, 15, 16}
    assert frames_of[1] == set(range(5, F))  # found by the redetection at frame 5
    assert frames_of[2] == set(range(10, F))  # entered at 8, found by the redetection at frame 10
    assert (res.n_views[:, inv[0]][np.r_[0:14, 17:F]] == C).all()


# ---------------------------------------------------------------------------------------------------------------
# real video (Pose2Sim demo, shipped BlazePose models)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_capture(tmp_path_factory):
    if not (DATA / "videos_multi" / "cam01.mp4").is_file():
        pytest.skip("Pose2Sim demo videos not available")
    root = tmp_path_factory.mktemp("pose2sim_multi")
    cams = read_cameras(DATA / "calibration" / "Calib_qualisys.toml")
    cams = cams.replace(names=tuple(n.replace("_", "") for n in cams.names))
    write_cameras_toml(cams, root / "cameras.toml")
    (root / "videos").mkdir()
    for n in cams.names:
        (root / "videos" / f"{n}.mp4").symlink_to(DATA / "videos_multi" / f"{n}.mp4")
    return root


@pytest.mark.filterwarnings("ignore:.*calibration 1088x1920.*")
def test_real_video_two_people_consistent_ids_and_cache(real_capture, monkeypatch):
    import h4djax.detect.pipeline as pipeline
    from h4djax.associate.geometry import triangulate_np
    from h4djax.geometry.cameras_np import project_np

    cap = read_capture(real_capture, require_keypoints=False)
    cfg = Config(detect=DetectConfig(min_track_frames=1, threads=1))
    kp = detect_capture(cap, cfg, progress=False, frames=(0, 3))
    assert kp.shape == (3, 4, 2, 17, 3) and kp.dtype == np.float32
    # Both people (participant + composited person) in at least 3 of the 4 views in every frame.
    assert ((kp[..., 2] > 0.5).sum(-1) >= 8).sum(1).min() >= 3
    X, V, _ = triangulate_np(cap.cameras, np.moveaxis(kp, 1, 0), conf=0.5)  # [3, 2, 17]
    assert V.sum(-1).min() >= 12
    centre = np.array([[X[f, p][V[f, p]].mean(0) for p in range(2)] for f in range(3)])
    assert np.linalg.norm(centre[:, 0] - centre[:, 1], axis=-1).min() > 0.5  # two different people
    assert np.abs(np.diff(centre, axis=0)).max() < 0.1  # same id = same person from frame to frame (60 fps)
    uv, _ = project_np(cap.cameras, X)
    err = np.linalg.norm(uv - np.moveaxis(kp[..., :2], 1, 0), axis=-1)
    m = (np.moveaxis(kp[..., 2], 1, 0) > 0.5) & V[None]
    assert np.median(err[m]) < 25.0  # px, on 1088x1920 images with people ~1000 px tall
    # The cache: same settings -> the file is reused (the detector must not run again).
    with np.load(real_capture / CACHE_FILE) as z:
        assert bool(z["associated"]) and str(z["joint_set"]) == "coco17" and float(z["fps"]) == 60.0
        assert json.loads(str(z["detect_stats"]))["frames"] == 3

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pipeline, "run_detection", boom)
    np.testing.assert_array_equal(detect_capture(cap, cfg, progress=False, frames=(0, 3)), kp)
    got = ensure_keypoints(cap, cfg, progress=False, frames=(0, 3))
    assert got.associated and got.fps == 60.0 and got.joint_set == "coco17"
    np.testing.assert_array_equal(got.keypoints, kp)
    # Read back as a capture directory (what `h4d fit` does): the file is re-validated against the settings.
    again = read_capture(real_capture)
    assert again.keypoints.shape == kp.shape
    np.testing.assert_array_equal(ensure_keypoints(again, cfg, progress=False, frames=(0, 3)).keypoints, kp)
    changed = Config(detect=dataclasses.replace(cfg.detect, assoc_max_dist=0.2))
    with pytest.raises(AssertionError, match="cache should have been used"):  # i.e. the front end would run again
        ensure_keypoints(again, changed, progress=False, frames=(0, 3))


def test_foreign_keypoints_file_is_never_overwritten(tmp_path):
    rig = make_rig(2)
    write_cameras_toml(rig, tmp_path / "cameras.toml")
    (tmp_path / "videos").mkdir()
    for n in rig.names:
        (tmp_path / "videos" / f"{n}.mp4").write_bytes(b"")
    np.savez(tmp_path / CACHE_FILE, keypoints=np.zeros((1, 2, 1, 17, 3), np.float32))
    cap = Capture(cameras=rig, keypoints=None, joint_set="", associated=False, fps=0.0,
                  media={n: tmp_path / "videos" / f"{n}.mp4" for n in rig.names})
    with pytest.raises(CaptureError, match="not written by detect_capture"):
        detect_capture(cap, DetectConfig(), progress=False)
