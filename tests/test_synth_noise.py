"""The detector noise model's statistics match its configuration (h4djax.synth.noise), and the depth-buffer
visibility test hides what is behind a body (h4djax.synth.visibility)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.geometry import from_numpy
from h4djax.synth.config import NoiseConfig
from h4djax.synth.noise import COCO_LR_PAIRS, apply_detector_noise
from h4djax.synth.visibility import keypoint_visibility

F, C, P, K = 400, 3, 2, 17
SIZE = np.array([[1920, 1080]] * C)


def _inputs(separate: bool = True):
    """Exact projections of two static, well separated people: person p's keypoints spread over a 300 px box."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 300, (K, 2))
    uv = np.zeros((F, C, P, K, 2))
    for p in range(P):
        uv[:, :, p] = base + np.array([400.0 + (800.0 if separate else 100.0) * p, 300.0])
    box = np.concatenate([uv.min(3), uv.max(3)], -1)  # [F, C, P, 4]
    return uv, np.ones((F, C, P, K), bool), box, np.ones((F, C, P), bool), np.full((F, C, P, K), -1)


def _clean(**kw) -> NoiseConfig:
    off = dict(occlusion=False, swap_prob=0.0, flip_prob=0.0, outlier_prob=0.0, miss_prob=0.0, miss_kpt_prob=0.0,
               contact_swap_prob=0.0, occluded_jump_prob=0.0)
    off.update(kw)
    return dataclasses.replace(NoiseConfig(), **off)


def test_noise_disabled_returns_exact_projections():
    uv, front, box, pf, occ = _inputs()
    uv[0, 0, 0, 0] = [-5.0, 10.0]  # off-image keypoint -> missing
    kp, lab = apply_detector_noise(uv, front, SIZE, box, pf, occ, NoiseConfig(enabled=False),
                                   np.random.default_rng(1))
    ok = kp[..., 2] > 0
    np.testing.assert_array_equal(kp[..., :2][ok], uv[ok].astype(np.float32))
    assert not ok[0, 0, 0, 0] and lab[0, 0, 0, 0] == 7 and ok.sum() == ok.size - 1


def test_pixel_noise_std_scales_with_person_size_and_joint_type():
    uv, front, box, pf, occ = _inputs()
    cfg = _clean(pixel_sigma=0.01, temporal_corr=0.0)
    kp, lab = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg, np.random.default_rng(2))
    assert np.all(lab == 0)
    err = kp[..., :2] - uv
    size = np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])  # px
    expected = cfg.pixel_sigma * size[..., None] * np.asarray(cfg.joint_sigma_scale)  # [F, C, P, K]
    z = err / expected[..., None]
    # Unit normal per axis overall and per keypoint type (face points tight, hips loose).
    assert np.std(z) == pytest.approx(1.0, abs=0.02)
    per_joint = np.std(err, axis=(0, 1, 2, 4))
    ratio = per_joint / (cfg.pixel_sigma * size.mean() * np.asarray(cfg.joint_sigma_scale))
    np.testing.assert_allclose(ratio, 1.0, atol=0.08)
    assert per_joint[11] > 3 * per_joint[1]  # hip vs eye
    # Confidence correlates negatively with the error.
    e = np.linalg.norm(err, axis=-1) / expected
    assert np.corrcoef(e.ravel(), kp[..., 2].ravel())[0, 1] < -0.5


def test_temporal_correlation_matches_ar1_coefficient():
    uv, front, box, pf, occ = _inputs()
    cfg = _clean(temporal_corr=0.6)
    kp, _ = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg, np.random.default_rng(3))
    e = (kp[..., 0] - uv[..., 0]).reshape(F, -1)
    lag1 = np.mean(e[1:] * e[:-1]) / np.mean(e * e)
    assert lag1 == pytest.approx(0.6, abs=0.03)


def test_event_rates_match_configuration():
    uv, front, box, pf, occ = _inputs()
    cfg = _clean(outlier_prob=0.02, swap_prob=0.03, miss_kpt_prob=0.015, miss_prob=0.0)
    kp, lab = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg, np.random.default_rng(4))
    n = lab.size
    tol = lambda p: 4 * np.sqrt(p * (1 - p) / n) + 1e-3  # noqa: E731
    # Swaps: 8 pairs of 17 keypoints, both members labelled; later effects (outliers, drops) overwrite a few.
    swap_rate = 0.03 * 16 / 17 * (1 - 0.02) * (1 - 0.015)
    assert np.mean(lab == 4) == pytest.approx(swap_rate, abs=tol(swap_rate))
    assert np.mean(lab == 5) == pytest.approx(0.02 * (1 - 0.015), abs=tol(0.02))
    assert np.mean(lab == 6) == pytest.approx(0.015, abs=tol(0.015))
    assert np.all(kp[lab == 6][:, 2] == 0)
    # A swapped pair really carries the other side's position.
    f, c, p, k = np.argwhere(lab == 4)[0]
    partner = {a: b for a, b in COCO_LR_PAIRS} | {b: a for a, b in COCO_LR_PAIRS}
    assert np.linalg.norm(kp[f, c, p, k, :2] - uv[f, c, p, partner[k]]) < np.linalg.norm(kp[f, c, p, k, :2]
                                                                                      - uv[f, c, p, k])
    # Outliers stay inside the person's box grown by 50% and have confidences in the configured range.
    o = lab == 5
    assert np.all((kp[o][:, 2] >= 0.3) & (kp[o][:, 2] <= 0.8))


def test_missed_detection_runs_have_the_configured_length():
    uv, front, box, pf, occ = _inputs()
    cfg = _clean(miss_prob=0.01, miss_duration=6)
    kp, lab = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg, np.random.default_rng(5))
    missed = np.all(lab == 6, axis=-1)  # whole person missing [F, C, P]
    # Expected share of frames inside a run: 1 - (1 - p)^duration.
    expect = 1 - (1 - 0.01) ** 6
    assert np.mean(missed) == pytest.approx(expect, abs=0.02)
    # Runs: maximal streaks are at least the duration long (except when cut by the sequence end).
    m = missed[:, 0, 0].astype(int)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], m])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([m, [0]])) == -1)
    assert len(starts) > 0 and np.all((ends - starts + 1)[ends < F - 1] >= 6)


def test_contact_pickup_needs_overlapping_boxes():
    cfg = _clean(contact_swap_prob=0.5)
    uv, front, box, pf, occ = _inputs(separate=True)
    _, lab = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg, np.random.default_rng(6))
    assert np.mean(lab == 3) == 0.0


def test_contact_pickup_rate_follows_its_configuration_and_only_near_the_partner():
    """Only keypoints near the same keypoint of the partner (contact_pickup_radius x person size) are picked up,
    each with probability contact_swap_prob; the others never are."""
    cfg = _clean(contact_swap_prob=0.3, contact_pickup_radius=0.1)
    uv, front, box, pf, occ = _inputs(separate=False)  # person 1 = person 0 shifted 100 px (box ~300 px)
    uv[:, :, 1] = uv[:, :, 0] + np.array([100.0, 0.0])
    near = np.zeros(K, bool)
    near[:5] = True
    uv[:, :, 1, near] = uv[:, :, 0, near] + np.array([10.0, 5.0])  # 5 keypoints in contact (~11 px apart)
    box = np.concatenate([uv.min(3), uv.max(3)], -1)
    kp, lab = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg, np.random.default_rng(6))
    assert np.mean(lab[..., near] == 3) == pytest.approx(0.3, abs=0.02)
    assert np.all(lab[..., ~near] != 3)
    # A picked-up keypoint sits on the partner's keypoint.
    f, c, p, k = np.argwhere(lab == 3)[0]
    assert np.linalg.norm(kp[f, c, p, k, :2] - uv[f, c, 1 - p, k]) < 10 * cfg.pixel_sigma * 300
    # The preset's overall rate stays a detector-like few percent of the in-contact share, not of all keypoints.
    cfg0 = dataclasses.replace(cfg, contact_swap_prob=0.0)
    _, lab0 = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg0, np.random.default_rng(6))
    assert np.mean(lab0 == 3) == 0.0


def test_occlusion_lowers_confidence_and_jumps_to_the_occluder():
    uv, front, box, pf, occ = _inputs()
    occ = occ.copy()
    occ[:, :, 0, :8] = 1  # person 0's first 8 keypoints hidden by person 1
    cfg = _clean(occluded_jump_prob=0.3)
    kp, lab = apply_detector_noise(uv, front, SIZE, box, pf, occ, cfg, np.random.default_rng(7))
    hidden = lab[:, :, 0, :8]
    assert np.mean(hidden == 2) == pytest.approx(0.3, abs=0.02)
    assert np.all(np.isin(hidden, [1, 2]))
    # Occluded keypoints are much less confident than visible ones.
    assert kp[:, :, 0, :8, 2][hidden == 1].mean() < 0.5 * kp[:, :, 0, 8:, 2].mean()
    # A jumped keypoint sits near one of the occluder's keypoints.
    f, c, k = np.argwhere(hidden == 2)[0]
    d = np.linalg.norm(uv[f, c, 1] - kp[f, c, 0, k, :2], axis=-1).min()
    assert d < 10 * cfg.pixel_sigma * 300


def test_depth_buffer_visibility():
    """A keypoint behind a dense sheet of 'mesh' points is hidden, one in front is visible."""
    K_ = np.array([[800.0, 0, 400], [0, 800.0, 300], [0, 0, 1]])
    cams = from_numpy(K_[None], None, np.eye(3)[None], np.zeros((1, 3)), np.array([[800, 600]]))
    g = np.linspace(-0.4, 0.4, 60)
    sheet = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    # person 0: a sheet at depth 3 m; person 1: a sheet at depth 5 m (behind, larger).
    v0 = np.concatenate([sheet, np.full((len(sheet), 1), 3.0)], 1)
    v1 = np.concatenate([sheet * 2, np.full((len(sheet), 1), 5.0)], 1)
    verts = np.stack([v0, v1])[None]  # [1, 2, V, 3]
    kp = np.zeros((1, 2, 2, 3))
    kp[0, 0] = [[0.0, 0.0, 2.9], [0.1, 0.1, 3.05]]  # in front of its own sheet; just behind it (< self margin)
    kp[0, 1] = [[0.0, 0.0, 5.0], [0.7, 0.7, 5.0]]  # behind person 0's sheet; beside it (1.0 m off-axis... visible)
    vis = keypoint_visibility(cams, jnp.asarray(verts, jnp.float32), jnp.asarray(kp, jnp.float32), grid=32,
                              self_margin=0.1, mutual_margin=0.03)
    occ = np.asarray(vis.occluder)[0, 0]  # [people, kpts]
    np.testing.assert_array_equal(occ, [[-1, -1], [0, -1]])
    assert float(np.asarray(vis.depth_gap)[0, 0, 1, 0]) == pytest.approx(2.0, abs=0.05)
