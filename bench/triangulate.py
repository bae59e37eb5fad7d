"""Benchmark: h4djax robust triangulation vs the EgoHumans-style numpy/scipy reference and aniposelib.

Same input for every method: a synthetic capture (``h4djax.synth`` preset, or ``--source fixture``: the small
built-in generator below) -> the 2D filter (``h4djax.triangulate.filter_with_config``) -> triangulation.

Measured (2-core CPU; the machine is shared, so every comparison is a ratio measured in the same run):

1. ``ours``: ``h4djax.triangulate.triangulate`` (float32, jitted). Compile time (lower + compile) separately;
   steady state = median of ``--repeats`` calls with ``block_until_ready``; all frames.
2. ``reference``: ``bench/reference_triangulate.py`` (Python loops, one ``scipy.optimize.least_squares`` per
   frame x person x joint, cv2 undistortion) on the first ``--ref-frames`` frames only (it is slow); reported per
   frame, and compared with ours on the same frames.
3. ``aniposelib``: ``CameraGroup.triangulate_ransac`` (optional dependency; it tries every subset of cameras per
   point -- 2^cams triangulations unless one reaches 0.5 px -- so it runs on ``--anipose-cams`` evenly spaced
   cameras and ``--anipose-frames`` frames, with ours re-run on exactly that input).
4. Camera-count sweep: evenly spaced subsets of 6, 8, ..., all cameras: MPJPE vs ground truth, MPJPE vs the
   all-camera result (the paper's Table 3 metric), fraction of valid joints, time.
5. ``--real``: the Pose2Sim demo (4 real cameras, OpenPose BODY_25B): per-camera median reprojection error,
   leave-one-camera-out error, plain confidence-weighted DLT for comparison with the README's numbers.

Usage: ``.venv/bin/python bench/triangulate.py [--source synth --preset configs/synth_hard.toml] [--real]``.
Writes ``bench/triangulate.json`` and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

# jaxlib 0.10.2's CPU "ynn" fusion miscomputes batched projections of > ~11k points (docs/triangulation_report.md);
# the synthetic generator projects whole sequences, so it is disabled for the whole benchmark (before jax loads).
if "--keep-ynn" not in sys.argv:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_experimental_ynn_fusion_type=").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reference_triangulate import reference_triangulate, undistort_cv2  # noqa: E402

from h4djax.config import FilterConfig, TriangulationConfig  # noqa: E402
from h4djax.geometry import Cameras, from_numpy, project, to_jax, to_numpy  # noqa: E402
from h4djax.triangulate import TriangulationParams, filter_with_config, triangulate  # noqa: E402
from h4djax.triangulate.dlt import view_normal_entries, weighted_dlt  # noqa: E402

REAL = Path("/work/shared/data/pose2sim_demo")


# ------------------------------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------------------------------

# COCO-17 standing template (metres, z up, facing +y): used only by the fallback fixture.
_TEMPLATE = np.array([
    [0.00, 0.10, 1.62], [0.03, 0.08, 1.66], [-0.03, 0.08, 1.66], [0.07, 0.00, 1.64], [-0.07, 0.00, 1.64],
    [0.19, 0.00, 1.42], [-0.19, 0.00, 1.42], [0.25, 0.05, 1.15], [-0.25, 0.05, 1.15], [0.27, 0.15, 0.92],
    [-0.27, 0.15, 0.92], [0.10, 0.00, 0.95], [-0.10, 0.00, 0.95], [0.11, 0.03, 0.52], [-0.11, 0.03, 0.52],
    [0.12, 0.00, 0.08], [-0.12, 0.00, 0.08]])
_TEMPLATE[:, 0] *= -1.0  # facing +y with z up, the subject's left is -x


def _look_at(center, target):
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])  # image y points down (world -z)
    return R, -R @ center


def fixture_capture(num_cams=20, frames=600, seed=0):
    """A small stand-in for h4djax.synth: a 20-camera GoPro-like ring (half cv2.fisheye), two skeletons facing
    each other 0.35 m apart and swaying, and a detector-like noise model (pixel noise ~0.6% of the person's image
    height, confidence correlated with error, 10% occluded keypoints, 1% outliers, 1.5% left/right swaps, 1%
    dropped keypoints). Returns host Cameras, keypoints f32[F, C, 2, 17, 3], ground truth f64[F, 2, 17, 3]."""
    rng = np.random.default_rng(seed)
    K, dist, Rs, ts, size, fe = [], [], [], [], [], []
    for c in range(num_cams):
        a = 2 * np.pi * c / num_cams + np.deg2rad(rng.normal(0, 3))
        r = 3.5 + rng.normal(0, 0.15)
        R, t = _look_at(np.array([r * np.cos(a), r * np.sin(a), 1.7 + rng.normal(0, 0.12)]),
                        np.array([0, 0, 0.9]) + rng.normal(0, 0.3, 3) * [1, 1, 0.3])
        fisheye = c % 2 == 1
        w, h = (3840, 2160) if rng.uniform() < 0.5 else (1920, 1080)
        hfov = np.deg2rad((110 if fisheye else 80) + rng.normal(0, 3))
        f = (w / 2) / (hfov / 2 if fisheye else np.tan(hfov / 2))
        K.append([[f, 0, w / 2 + rng.normal(0, 0.005 * w)], [0, f, h / 2 + rng.normal(0, 0.005 * w)], [0, 0, 1]])
        d = np.zeros(8)
        d[:4 if fisheye else 5] = (np.array([0.03, -0.012, 0.004, -0.0008]) if fisheye
                                   else np.array([-0.04, 0.015, 0.0005, -0.0005, -0.002])) * rng.normal(1, 0.25)
        dist.append(d)
        Rs.append(R)
        ts.append(t)
        size.append([w, h])
        fe.append(fisheye)
    cams = to_numpy(from_numpy(np.array(K), np.array(dist), np.array(Rs), np.array(ts), np.array(size),
                               np.array(fe)))
    t = np.arange(frames) / 30.0
    gt = np.zeros((frames, 2, 17, 3))
    for p in range(2):
        heading = (0.0 if p == 0 else np.pi) + 0.3 * np.sin(0.4 * t + p)
        center = np.stack([0.3 * np.sin(0.2 * t), 0.3 * np.cos(0.15 * t), 0 * t], -1)
        center += np.stack([np.cos(heading + np.pi / 2), np.sin(heading + np.pi / 2), 0 * t], -1) * 0.175
        body = np.broadcast_to(_TEMPLATE, (frames, 17, 3)).copy()
        swing = 0.15 * np.sin(1.3 * t + p)[:, None]
        body[:, [7, 9], 1] += swing
        body[:, [8, 10], 1] -= swing
        body[:, [9, 10], 2] += 0.2 * np.abs(np.sin(0.7 * t))[:, None]
        c, s = np.cos(heading - np.pi / 2), np.sin(heading - np.pi / 2)
        Rz = np.stack([np.stack([c, -s, 0 * c], -1), np.stack([s, c, 0 * c], -1),
                       np.broadcast_to([0.0, 0, 1], (frames, 3))], -2)
        gt[:, p] = np.einsum("fij,fkj->fki", Rz, body) + center[:, None]
    # Projected in blocks of 100 frames: jaxlib 0.10.2's CPU "ynn" fusion returns wrong values for the batched
    # projection of >~11k points (found here; see docs/triangulation_report.md), blocks stay below that.
    blocks = [project(to_jax(cams), jnp.asarray(gt[i:i + 100])) for i in range(0, frames, 100)]
    uv = np.concatenate([np.moveaxis(np.asarray(b[0]), 0, 1) for b in blocks])  # [F, C, P, 17, 2]
    front = np.concatenate([np.moveaxis(np.asarray(b[1]), 0, 1) for b in blocks])
    height = np.ptp(uv[..., 1], axis=-1)[..., None]
    sigma = 0.006 * height * (np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                                        .89, .89]) / 0.6)
    occl = rng.uniform(size=uv.shape[:-1]) < 0.10
    n = rng.normal(size=uv.shape) * (sigma * np.where(occl, 2.5, 1.0))[..., None]
    conf = 0.93 - 0.06 * np.linalg.norm(n, axis=-1) / sigma + rng.normal(0, 0.04, uv.shape[:-1])
    conf = np.where(occl, conf * 0.35, conf)
    kp = uv + n
    swap = rng.uniform(size=uv.shape[:3] + (8,)) < 0.015
    for j in range(8):
        a, b = 1 + 2 * j, 2 + 2 * j
        m = swap[..., j]
        kp[m, a], kp[m, b] = kp[m, b].copy(), kp[m, a].copy()
    out = rng.uniform(size=uv.shape[:-1]) < 0.01
    lo, hi = uv.min(-2, keepdims=True), uv.max(-2, keepdims=True)
    rnd = lo + (hi - lo) * rng.uniform(-0.25, 1.25, size=uv.shape)
    kp = np.where(out[..., None], rnd, kp)
    conf = np.where(out, rng.uniform(0.3, 0.8, out.shape), conf)
    conf = np.where(rng.uniform(size=conf.shape) < 0.01, 0.0, conf)
    inside = (kp[..., 0] >= 0) & (kp[..., 1] >= 0) & (kp[..., 0] < cams.size[None, :, None, None, 0]) \
        & (kp[..., 1] < cams.size[None, :, None, None, 1]) & front
    conf = np.where(inside, np.clip(conf, 0, 1), 0.0)
    return cams, np.concatenate([kp, conf[..., None]], -1).astype(np.float32), gt


def load_input(args):
    """(host Cameras, keypoints f32[F, C, P, 17, 3], gt f64[F, P, 17, 3] with NaN = unknown, description)."""
    if args.source == "synth":
        from h4djax.synth.config import load_synth_config
        from h4djax.synth.generate import generate

        preset = Path(args.preset)
        cfg = load_synth_config(preset if preset.exists() else None)
        t0 = time.perf_counter()
        sc = generate(cfg, measure_frames=0)
        name = f"preset {preset.name}" if preset.exists() else f"default SynthConfig ({preset.name} not found)"
        desc = (f"h4djax.synth {name}: {cfg.rig.num_cameras} cams, {cfg.motion.num_frames} frames, "
                f"{cfg.motion.num_people} people, scenario {cfg.motion.scenario}, seed {cfg.seed} "
                f"(generated in {time.perf_counter() - t0:.0f} s)")
        # Guard against the jaxlib CPU projection bug (docs/triangulation_report.md): the clean 2D keypoints must be
        # the projections of the ground truth, recomputed here in small blocks.
        cj = to_jax(to_numpy(sc.cameras))
        gt = np.asarray(sc.joints3d, np.float64)
        uv = np.concatenate([np.moveaxis(np.asarray(project(cj, jnp.asarray(gt[i:i + 100]))[0]), 0, 1)
                             for i in range(0, len(gt), 100)])
        gap = float(np.nanmax(np.abs(uv - np.asarray(sc.clean))))
        desc += f"; max |clean 2D - projected GT| = {gap:.3g} px"
        return to_numpy(sc.cameras), np.asarray(sc.keypoints, np.float32), np.asarray(sc.joints3d, np.float64), desc
    cams, kp, gt = fixture_capture(args.cams, args.frames, args.seed)
    return cams, kp, gt, f"bench fixture ({args.cams} cams, {args.frames} frames, 2 people, seed {args.seed})"


# ------------------------------------------------------------------------------------------------------------------
# Methods
# ------------------------------------------------------------------------------------------------------------------

def mpjpe_mm(xyz, valid, gt):
    ok = valid & np.all(np.isfinite(gt), -1) & np.all(np.isfinite(xyz), -1)
    return float(np.linalg.norm(xyz - gt, axis=-1)[ok].mean() * 1000) if ok.any() else float("nan")


def run_ours(cams: Cameras, kp: np.ndarray, cfg: TriangulationConfig, repeats: int):
    cams_j = to_jax(cams, jnp.float32)
    kp_j = jnp.asarray(kp, jnp.float32)
    params = TriangulationParams.from_config(cfg, dtype=jnp.float32)
    static = dict(refine_iters=cfg.refine_iters, frame_chunk=cfg.frame_chunk, normalize=cfg.dlt_normalize)
    t0 = time.perf_counter()
    compiled = triangulate.lower(cams_j, kp_j, params, **static).compile()
    compile_s = time.perf_counter() - t0
    res = jax.block_until_ready(compiled(cams_j, kp_j, params))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = jax.block_until_ready(compiled(cams_j, kp_j, params))
        times.append(time.perf_counter() - t0)
    res = jax.tree.map(np.asarray, res)
    steady = float(np.median(times))
    return res, {"compile_s": compile_s, "steady_s": steady, "per_frame_ms": steady / len(kp) * 1e3,
                 "frames": len(kp)}


def normalized_np(cams: Cameras, kp: np.ndarray) -> np.ndarray:
    """cv2 undistortion of every keypoint (the reference's own camera code). -> xn [F, C, P, K, 2]."""
    F, C, P, K, _ = kp.shape
    xn = np.zeros((F, C, P, K, 2))
    for c in range(C):
        xn[:, c] = undistort_cv2(cams.K[c], cams.dist[c], bool(cams.fisheye[c]),
                                 kp[:, c, ..., :2].reshape(-1, 2)).reshape(F, P, K, 2)
    return xn


def run_reference(cams: Cameras, kp: np.ndarray, cfg: TriangulationConfig):
    t0 = time.perf_counter()
    xn = normalized_np(cams, kp.astype(np.float64))
    ref = reference_triangulate(cams.R, cams.t, xn, kp[..., 2].astype(np.float64), candidate_conf=cfg.candidate_conf,
                                eps=cfg.inlier_eps, min_views=cfg.min_views)
    el = time.perf_counter() - t0
    return ref, {"time_s": el, "per_frame_ms": el / len(kp) * 1e3, "frames": len(kp)}


def run_aniposelib(cams: Cameras, kp: np.ndarray, cfg: TriangulationConfig):
    try:
        from aniposelib.cameras import Camera, CameraGroup, FisheyeCamera
    except ImportError as e:
        return None, {"error": f"aniposelib not importable: {e}"}
    import cv2

    group = []
    for c in range(cams.num_cams):
        cls = FisheyeCamera if cams.fisheye[c] else Camera
        d = cams.dist[c, :4] if cams.fisheye[c] else cams.dist[c]
        group.append(cls(matrix=cams.K[c], dist=d, size=tuple(int(v) for v in cams.size[c]),
                         rvec=cv2.Rodrigues(cams.R[c])[0].ravel(), tvec=cams.t[c], name=cams.names[c]))
    cg = CameraGroup(group)
    F, C, P, K, _ = kp.shape
    pts = np.moveaxis(kp[..., :2].astype(np.float64), 1, 0).reshape(C, -1, 2).copy()
    # Same candidate views as the pipeline: confidence above candidate_conf, the rest missing (NaN).
    pts[np.moveaxis(kp[..., 2], 1, 0).reshape(C, -1) <= cfg.candidate_conf] = np.nan
    t0 = time.perf_counter()
    out = cg.triangulate_ransac(pts, undistort=True, min_cams=2)[0]
    el = time.perf_counter() - t0
    xyz = out.reshape(F, P, K, 3)
    valid = np.all(np.isfinite(xyz), -1)
    return (np.nan_to_num(xyz), valid), {"time_s": el, "per_frame_ms": el / F * 1e3, "frames": F, "cams": C}


# ------------------------------------------------------------------------------------------------------------------
# Real data: Pose2Sim demo
# ------------------------------------------------------------------------------------------------------------------

def _largest_person(kp: np.ndarray) -> np.ndarray:
    """[F, C, P, K, 3] -> [F, C, 1, K, 3]: per view and frame the detection with the largest keypoint box (the
    participant; the background staff are far away and small)."""
    vis = (kp[..., 2] > 0.2)[..., None]
    hi = np.max(np.where(vis, kp[..., :2], -np.inf), axis=-2)
    lo = np.min(np.where(vis, kp[..., :2], np.inf), axis=-2)
    area = np.where(vis.any(-2)[..., 0], (hi - lo)[..., 0] * (hi - lo)[..., 1], -1.0)
    idx = np.argmax(area, axis=2)
    return np.take_along_axis(kp, idx[:, :, None, None, None], axis=2)


def left_is_left(xyz: np.ndarray, valid: np.ndarray) -> float:
    """Fraction of frames where the COCO "left" shoulder/hip/eye really is on the subject's left.

    up = mid-hip -> mid-shoulder, forward = mid-ear -> nose (the face direction); in a right-handed world the
    subject's left is up x forward. Majority vote of shoulders, hips and eyes per frame. A mirrored keypoint order
    gives ~0 here, which the symmetric limb-length checks cannot see."""
    need = [0, 1, 2, 3, 4, 5, 6, 11, 12]
    m = valid[:, need].all(-1)
    x = xyz[m]
    up = 0.5 * (x[:, 5] + x[:, 6]) - 0.5 * (x[:, 11] + x[:, 12])
    fwd = x[:, 0] - 0.5 * (x[:, 3] + x[:, 4])
    left = np.cross(up, fwd)
    votes = [np.sum((x[:, a] - x[:, b]) * left, -1) > 0 for a, b in ((5, 6), (11, 12), (1, 2))]
    return float(np.mean(np.mean(votes, axis=0) > 0.5)) if m.any() else float("nan")


def run_real(cfg: TriangulationConfig) -> dict:
    from h4djax.io.openpose import read_openpose
    from h4djax.io.pose2sim import read_pose2sim_toml

    cams = to_numpy(read_pose2sim_toml(REAL / "calibration/Calib_qualisys.toml"))
    det = read_openpose(REAL / "openpose_2d/balancing_single")
    kp = _largest_person(det.coco17()).astype(np.float32)  # [F, 4, 1, 17, 3]
    kp = np.asarray(filter_with_config(kp, FilterConfig()).keypoints)
    res, timing = run_ours(cams, kp, cfg, repeats=3)
    cj = to_jax(cams, jnp.float32)
    uv_hat = np.moveaxis(np.asarray(project(cj, jnp.asarray(res.xyz))[0]), 0, 1)  # [F, C, 1, 17, 2]
    err = np.linalg.norm(uv_hat - kp[..., :2], axis=-1)
    seen = (kp[..., 2] > cfg.candidate_conf) & res.valid[:, None]
    inl = np.moveaxis(res.inliers, -1, 1)
    out = {"frames": int(len(kp)), "cameras": list(cams.names), "valid_fraction": float(res.valid.mean()),
           "timing": timing}
    out["median_px_all_views"] = float(np.median(err[seen]))
    out["median_px_per_camera"] = [float(np.median(err[:, c][seen[:, c]])) for c in range(cams.num_cams)]
    out["median_px_inlier_views"] = float(np.median(err[inl]))
    out["median_px_per_camera_inliers"] = [float(np.median(err[:, c][inl[:, c]])) for c in range(cams.num_cams)]
    out["mean_inliers"] = float(res.n_inliers[res.valid].mean())
    # Plain confidence-weighted DLT over every view with confidence > 0 (README: ~13 px median).
    xn = normalized_np(cams, kp.astype(np.float64))
    P = np.concatenate([cams.R, cams.t[:, :, None]], -1)
    Q = view_normal_entries(jnp.asarray(P), jnp.asarray(np.moveaxis(np.moveaxis(xn, 1, 0), -1, 1)))
    Xd, okd = weighted_dlt(Q, jnp.asarray(np.moveaxis(kp[..., 2], 1, 0).astype(np.float64)))
    Xd = np.moveaxis(np.asarray(Xd), 0, -1)
    uv_d = np.moveaxis(np.asarray(project(to_jax(cams, jnp.float64), jnp.asarray(Xd))[0]), 0, 1)
    err_d = np.linalg.norm(uv_d - kp[..., :2], axis=-1)
    seen_d = (kp[..., 2] > 0) & np.asarray(okd)[:, None]
    out["dlt_all_views_median_px"] = float(np.median(err_d[seen_d]))
    out["dlt_all_views_median_px_per_camera"] = [float(np.median(err_d[:, c][seen_d[:, c]]))
                                                 for c in range(cams.num_cams)]
    # Leave one camera out: triangulate from the other three, project into the held-out camera.
    loo = []
    for c in range(cams.num_cams):
        keep = [i for i in range(cams.num_cams) if i != c]
        r3, _ = run_ours(cams.select(keep).replace(names=("a", "b", "c")), kp[:, keep], cfg, repeats=1)
        uv_c = np.asarray(project(to_jax(cams.select([c]), jnp.float32), jnp.asarray(r3.xyz))[0])[0]
        e = np.linalg.norm(uv_c - kp[:, c, ..., :2], axis=-1)
        m = r3.valid & (kp[:, c, ..., 2] > cfg.candidate_conf)
        loo.append({"camera": cams.names[c], "median_px": float(np.median(e[m])), "n": int(m.sum()),
                    "valid_fraction_3cams": float(r3.valid.mean())})
    out["leave_one_out"] = loo
    # Left/right order check of BODY_25B[:17] == COCO-17: limb lengths of the two sides agree, shoulders/hips are
    # apart by a body width, and the head is above the hips (along the world axis hips -> nose).
    xyz, v = res.xyz[:, 0], res.valid[:, 0]

    def seg(a, b):
        m = v[:, a] & v[:, b]
        return float(np.median(np.linalg.norm(xyz[m, a] - xyz[m, b], axis=-1)))

    out["coco_order_check"] = {
        "upper_arm_l_r_m": [seg(5, 7), seg(6, 8)], "forearm_l_r_m": [seg(7, 9), seg(8, 10)],
        "thigh_l_r_m": [seg(11, 13), seg(12, 14)], "shank_l_r_m": [seg(13, 15), seg(14, 16)],
        "shoulder_width_m": seg(5, 6), "hip_width_m": seg(11, 12), "eye_distance_m": seg(1, 2),
        "nose_to_eye_m": [seg(0, 1), seg(0, 2)],
        "left_is_left_fraction": left_is_left(xyz, v),
    }
    return out


# ------------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=["synth", "fixture"], default="synth")
    ap.add_argument("--preset", default=str(ROOT / "configs/synth_hard.toml"))
    ap.add_argument("--cams", type=int, default=20, help="fixture only")
    ap.add_argument("--frames", type=int, default=600, help="fixture only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-frames", type=int, default=3)
    ap.add_argument("--anipose-cams", type=int, default=8)
    ap.add_argument("--anipose-frames", type=int, default=3)
    ap.add_argument("--sweep", default="6,8,10,12,14,16,18,20")
    ap.add_argument("--real", action="store_true", help="also run the Pose2Sim real-data evaluation")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--keep-ynn", action="store_true", help="do not disable the XLA CPU ynn fusion (see top)")
    ap.add_argument("--out", default=str(ROOT / "bench/triangulate.json"))
    args = ap.parse_args()
    cfg = TriangulationConfig()
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, 2-core CPU (shared)",
                    "jax": jax.__version__, "config": cfg.__dict__, "command": " ".join(sys.argv),
                    "xla_flags": os.environ.get("XLA_FLAGS", "")}

    if not args.skip_synthetic:
        cams, kp_raw, gt, desc = load_input(args)
        F, C, P, K, _ = kp_raw.shape
        report["input"] = {"description": desc, "frames": F, "cams": C, "people": P, "joints": K}
        t0 = time.perf_counter()
        kp = np.asarray(filter_with_config(kp_raw, FilterConfig()).keypoints)
        report["filter_s"] = time.perf_counter() - t0
        print(f"input: {desc}; frames {F}, cams {C}, people {P}", flush=True)

        res, t_ours = run_ours(cams, kp, cfg, args.repeats)
        report["ours"] = {**t_ours, "mpjpe_mm": mpjpe_mm(res.xyz, res.valid, gt),
                          "valid_fraction": float(res.valid.mean())}
        print("ours", report["ours"], flush=True)

        n = min(args.ref_frames, F)
        ref, t_ref = run_reference(cams, kp[:n], cfg)
        # The reference's own algebraic DLT (no world normalization): same inlier sets by construction.
        res_rm, _ = run_ours(cams, kp[:n], dataclasses.replace(cfg, dlt_normalize=False), 1)
        report["reference"] = {**t_ref, "mpjpe_mm": mpjpe_mm(ref["xyz"], ref["valid"], gt[:n]),
                               "valid_fraction": float(ref["valid"].mean()),
                               "ours_mpjpe_mm_same_frames": mpjpe_mm(res.xyz[:n], res.valid[:n], gt[:n]),
                               "ours_valid_fraction_same_frames": float(res.valid[:n].mean()),
                               "inlier_sets_identical_fraction": float(
                                   (ref["inliers"] == res.inliers[:n]).all(-1)[ref["valid"]].mean()),
                               "ours_dlt_normalize_false_mpjpe_mm_same_frames": mpjpe_mm(
                                   res_rm.xyz, res_rm.valid, gt[:n]),
                               "ours_dlt_normalize_false_inlier_sets_identical_fraction": float(
                                   (ref["inliers"] == res_rm.inliers).all(-1)[ref["valid"]].mean()),
                               "speedup_per_frame": t_ref["per_frame_ms"] / t_ours["per_frame_ms"]}
        print("reference", report["reference"], flush=True)

        sel = np.round(np.linspace(0, C, min(args.anipose_cams, C), endpoint=False)).astype(int)
        na = min(args.anipose_frames, F)
        an, t_an = run_aniposelib(cams.select(sel), kp[:na, sel], cfg)
        if an is not None:
            ours_sub, t_sub = run_ours(cams.select(sel), kp[:, sel], cfg, args.repeats)
            report["aniposelib"] = {**t_an, "mpjpe_mm": mpjpe_mm(an[0], an[1], gt[:na]),
                                    "valid_fraction": float(an[1].mean()),
                                    "ours_same_cams_per_frame_ms": t_sub["per_frame_ms"],
                                    "ours_same_cams_mpjpe_mm_same_frames": mpjpe_mm(
                                        ours_sub.xyz[:na], ours_sub.valid[:na], gt[:na]),
                                    "ours_same_cams_valid_fraction_same_frames": float(ours_sub.valid[:na].mean()),
                                    "speedup_per_frame": t_an["per_frame_ms"] / t_sub["per_frame_ms"]}
        else:
            report["aniposelib"] = t_an
        print("aniposelib", report["aniposelib"], flush=True)

        sweep = []
        for nc in [int(x) for x in args.sweep.split(",") if int(x) <= C]:
            idx = np.round(np.linspace(0, C, nc, endpoint=False)).astype(int)
            r, t = run_ours(cams.select(idx), kp[:, idx], cfg, max(1, args.repeats - 1))
            both = r.valid & res.valid
            sweep.append({"cams": nc, "mpjpe_mm": mpjpe_mm(r.xyz, r.valid, gt),
                          "mpjpe_vs_all_cams_mm": float(np.linalg.norm(r.xyz - res.xyz, axis=-1)[both].mean() * 1e3),
                          "valid_fraction": float(r.valid.mean()), **t})
            print("sweep", sweep[-1], flush=True)
        report["camera_sweep"] = sweep

    if args.real:
        report["real_pose2sim"] = run_real(cfg)
        print("real", json.dumps(report["real_pose2sim"], indent=1), flush=True)

    Path(args.out).write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
