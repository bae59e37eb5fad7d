"""The ONNX 2D front end on real video (issue 8): detection, identity across views and time, reprojection.

Data: the Pose2Sim demo (/work/shared/data/pose2sim_demo, README there): 4 calibrated portrait cameras, 100 frames at
60 fps, `videos_single` (one participant; lab staff in the background of some views) and `videos_multi` (the same
clip with a second, rendered person composited in). There is no 3D ground truth, so the checks are geometric:

- every frame: each subject has 3D keypoints (robust triangulation, `h4djax.triangulate`, default config);
- reprojection error per camera: median pixel distance between the detections (confidence > 0.5) and the
  projection of the triangulated keypoints (all candidate views, outliers included);
- leave-one-camera-out: triangulate from the 3 other cameras, project into the held-out one, median distance to
  its detections (an error the held-out detections did not influence);
- identity: ID switches (a frame where matching the people to those of the previous frame by 3D keypoint distance
  is not the identity), 3D jumps (> 0.3 m mean keypoint displacement between consecutive frames);
- the same numbers for the shipped OpenPose detections of `videos_single` (`openpose_2d/balancing_single`,
  unassociated, 1-3 people per view), associated by `h4djax.associate.associate_sequence`;
- timing: frames/s of the whole front end, detector ms per call, keypoint model ms per person; reference in the
  same run: the detector (+ tiles) on every frame (`roi_from_3d=false`), on the first `--ref-frames` frames.

Usage (from the repository root):
    .venv/bin/python bench/detect.py                 # full run (about 10 min on the shared 2-core box)
    .venv/bin/python bench/detect.py --quick         # 8 frames, no RESULTS.md / docs update
Writes bench/detect.json, docs/real_data/contact_{single,multi}.png and the detect section of bench/RESULTS.md.
Detections are cached as keypoints2d.npz in the capture directories under --work (rerun with --fresh to redo).
"""

from __future__ import annotations

import argparse
import datetime
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from h4djax.associate import associate_sequence  # noqa: E402
from h4djax.config import Config, DetectConfig, TriangulationConfig  # noqa: E402
from h4djax.detect.pipeline import CACHE_FILE, detect_capture, run_detection  # noqa: E402
from h4djax.geometry import to_jax, to_numpy  # noqa: E402
from h4djax.geometry.cameras_np import project_np  # noqa: E402
from h4djax.io import read_cameras, read_capture, read_openpose, write_cameras_toml  # noqa: E402

MARK_BEGIN = "<!-- bench/detect.py: begin -->"
MARK_END = "<!-- bench/detect.py: end -->"
COCO_EDGES = [(5, 7), (7, 9), (6, 8), (8, 10), (5, 6), (11, 12), (5, 11), (6, 12), (11, 13), (13, 15), (12, 14),
              (14, 16), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
COLORS = [(230, 60, 40), (40, 120, 240), (40, 200, 60), (230, 200, 30), (200, 60, 200)]  # RGB per id


def pose2sim_capture(data: Path, kind: str, out: Path) -> Path:
    """A FORMATS.md capture directory for the demo: cameras.toml (names cam01..cam04, as the videos) + links."""
    cap = out / f"pose2sim_{kind}"
    (cap / "videos").mkdir(parents=True, exist_ok=True)
    cams = read_cameras(data / "calibration" / "Calib_qualisys.toml")
    cams = cams.replace(names=tuple(n.replace("_", "") for n in cams.names))  # cam_01 -> cam01
    write_cameras_toml(cams, cap / "cameras.toml")
    for n in cams.names:
        link = cap / "videos" / f"{n}.mp4"
        if not link.exists():
            link.symlink_to(data / f"videos_{kind}" / f"{n}.mp4")
    return cap


def triangulate_all(cams, kp: np.ndarray, people: int = 2):
    """Robust triangulation (h4djax.triangulate) of kp f[F, C, P, 17, 3]; people padded to `people` (one
    compilation per camera count). Returns xyz [F, P, 17, 3], valid [F, P, 17]."""
    from h4djax.triangulate import triangulate_with_config

    F, C, P = kp.shape[:3]
    pad = np.zeros((F, C, max(P, people), 17, 3), np.float32)
    pad[:, :, :P] = kp[..., :17, :]
    res = triangulate_with_config(to_jax(cams), pad, TriangulationConfig())
    return np.asarray(res.xyz, np.float64)[:, :P], np.asarray(res.valid, bool)[:, :P]


def reprojection_errors(cams, kp, xyz, valid, conf=0.5):
    """Pixel distances [C] lists between detections (conf > `conf`) and projected valid 3D keypoints."""
    uv, front = project_np(cams, xyz)  # [C, F, P, 17, 2]
    out = []
    for c in range(cams.num_cams):
        det = kp[:, c, :, :17]
        m = valid & front[c] & (det[..., 2] > conf)
        out.append(np.sqrt(((uv[c] - det[..., :2]) ** 2).sum(-1))[m])
    return out


def leave_one_out(cams, kp, conf=0.5):
    """Per held-out camera: distances between its detections and the projection of the 3-camera triangulation."""
    C = cams.num_cams
    out = []
    for c in range(C):
        others = [i for i in range(C) if i != c]
        xyz, valid = triangulate_all(cams.select(others), kp[:, others])
        uv, front = project_np(cams.select([c]), xyz)
        det = kp[:, c, :, :17]
        m = valid & front[0] & (det[..., 2] > conf)
        out.append(np.sqrt(((uv[0] - det[..., :2]) ** 2).sum(-1))[m])
    return out


def identity_metrics(xyz, valid, min_joints=8):
    """ID switches and 3D jumps between consecutive frames; frames with 3D for every person."""
    from scipy.optimize import linear_sum_assignment

    F, P = xyz.shape[:2]
    has = valid.sum(-1) >= min_joints  # [F, P]
    switches, jumps = 0, 0
    for t in range(1, F):
        ok = has[t] & has[t - 1]
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        both = valid[t][idx][:, None] & valid[t - 1][idx][None]
        d = np.linalg.norm(xyz[t][idx][:, None] - xyz[t - 1][idx][None], axis=-1)
        cost = np.where(both, d, 0).sum(-1) / np.maximum(both.sum(-1), 1)
        r, c = linear_sum_assignment(cost)
        switches += int((r != c).any())
        jumps += int((np.diag(cost) > 0.3).sum())
    return {"frames_all_people_3d": int(has.all(1).sum()), "frames": F, "id_switches": switches,
            "jumps_over_0.3m": jumps, "per_person_frames_3d": has.sum(0).tolist()}


def contact_sheet(cams, capture_dir: Path, xyz, valid, frames, path: Path, tile_w=270):
    """Projected 3D skeletons (colour = person id) on the views of a few frames; rows = frames, cols = cameras."""
    import cv2

    from h4djax.detect import MultiCameraReader

    cap = read_capture(capture_dir, require_keypoints=False)
    reader = MultiCameraReader({n: cap.media[n] for n in cams.names}, calibration_sizes=cams)
    rows = []
    for t in frames:
        imgs = reader.read(int(t))
        uv, front = project_np(cams, xyz[t])  # [C, P, 17, 2]
        tiles = []
        for c, img in enumerate(imgs):
            im = np.ascontiguousarray(img.copy())
            s = im.shape[1] / tile_w
            for p in range(xyz.shape[1]):
                col = COLORS[p % len(COLORS)]
                v = valid[t, p] & front[c, p]
                pts = uv[c, p] / reader.to_calibration[c]
                for a, b in COCO_EDGES:
                    if v[a] and v[b]:
                        cv2.line(im, tuple(np.rint(pts[a]).astype(int)), tuple(np.rint(pts[b]).astype(int)), col,
                                 max(2, int(3 * s)), cv2.LINE_AA)
                for j in np.flatnonzero(v):
                    cv2.circle(im, tuple(np.rint(pts[j]).astype(int)), max(3, int(3 * s)), col, -1)
                if v.any():
                    top = pts[v].min(0)
                    cv2.putText(im, f"id{p}", (int(top[0]), max(int(top[1]) - int(12 * s), int(30 * s))),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.8 * s, col, max(2, int(2 * s)), cv2.LINE_AA)
            small = cv2.resize(im, (tile_w, int(round(im.shape[0] / s))), interpolation=cv2.INTER_AREA)
            cv2.putText(small, f"{cams.names[c]} t={t}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
            tiles.append(small)
        h = min(x.shape[0] for x in tiles)
        rows.append(np.concatenate([x[:h] for x in tiles], 1))
    sheet = np.concatenate(rows, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def summarize(cams, kp, xyz, valid):
    rep = reprojection_errors(cams, kp, xyz, valid)
    loo = leave_one_out(cams, kp)
    med = lambda a: float(np.median(a)) if len(a) else float("nan")  # noqa: E731
    return {
        "reproj_median_px_per_cam": {n: med(e) for n, e in zip(cams.names, rep)},
        "reproj_median_px_all": med(np.concatenate(rep)),
        "reproj_p90_px_all": float(np.percentile(np.concatenate(rep), 90)) if sum(map(len, rep)) else float("nan"),
        "loo_median_px_per_cam": {n: med(e) for n, e in zip(cams.names, loo)},
        "loo_median_px_all": med(np.concatenate(loo)),
        "observations": int(sum(map(len, rep))),
        "mean_views_per_person": np.round(((kp[..., :17, 2] > 0.3).sum(-1) >= 5).sum(1).mean(0), 2).tolist(),
        **identity_metrics(xyz, valid),
        "person_mean_position_m": [np.round(xyz[:, p][valid[:, p]].mean(0), 3).tolist() if valid[:, p].any()
                                   else None for p in range(xyz.shape[1])],
    }


def min_frames(frames: int) -> int:
    """The default minimum track length, shortened for short (--quick) runs."""
    return min(DetectConfig().min_track_frames, max(1, frames // 2))


def run(args) -> dict:
    data = Path(args.data)
    work = Path(args.work)
    out: dict = {"date": datetime.date.today().isoformat(),
                 "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, shared",
                 "frames": args.frames, "command": " ".join(["bench/detect.py"] + sys.argv[1:])}
    stop = args.frames
    for kind, max_people in (("single", args.max_people_single), ("multi", args.max_people_multi)):
        cap_dir = pose2sim_capture(data, kind, work)
        if args.fresh and (cap_dir / CACHE_FILE).exists():
            (cap_dir / CACHE_FILE).unlink()
        capture = read_capture(cap_dir, require_keypoints=False)
        cfg = Config(detect=DetectConfig(threads=args.threads, max_people=max_people,
                                         min_track_frames=min_frames(args.frames)))
        t0 = time.perf_counter()
        kp = detect_capture(capture, cfg, progress=not args.no_progress, frames=(0, stop))
        wall = time.perf_counter() - t0
        with np.load(cap_dir / CACHE_FILE) as z:
            stats = json.loads(str(z["detect_stats"]))
            fps = float(z["fps"])
        cams = to_numpy(capture.cameras)
        xyz, valid = triangulate_all(cams, kp)
        res = {"max_people": max_people, "people": int(kp.shape[2]), "detect_wall_s_this_call": wall, "fps": fps,
               "stats": stats, **summarize(cams, kp, xyz, valid)}
        if args.sheets:
            F = kp.shape[0]
            frames = sorted({0, F // 3, (2 * F) // 3, F - 1})
            res["contact_sheet"] = str(contact_sheet(cams, cap_dir, xyz, valid, frames,
                                                     Path(args.docs) / f"contact_{kind}.png"))
        out[kind] = res
        print(kind, json.dumps({k: v for k, v in res.items() if k != "stats"}, indent=1), flush=True)

    # OpenPose detections of videos_single, associated by h4djax.associate.
    op = read_openpose(data / "openpose_2d" / "balancing_single")
    cams = to_numpy(read_capture(work / "pose2sim_single", require_keypoints=False).cameras)
    kp_op = op.coco17()[:stop]
    # With the default max_people, which tracks does the association keep (OpenPose also sees the lab staff)?
    t0 = time.perf_counter()
    full = associate_sequence(cams, kp_op, DetectConfig(min_track_frames=min_frames(args.frames)), fps=60.0)
    t_assoc = time.perf_counter() - t0
    kept = [{"frames_2plus_views": int((full.n_views[:, p] >= 2).sum()),
             "views_used": [int((full.keypoints[:, c, p, :, 2].max(-1) > 0).sum()) for c in range(cams.num_cams)],
             "mean_position_m": np.round(full.xyz[:, p][full.valid[:, p]].mean(0), 2).tolist()}
            for p in range(full.keypoints.shape[2])]
    # Metrics on the subject only (max_people = 1: the demo has one participant).
    assoc = associate_sequence(cams, kp_op, DetectConfig(max_people=1, min_track_frames=min_frames(args.frames)),
                               fps=60.0)
    xyz, valid = triangulate_all(cams, assoc.keypoints)
    out["openpose_single"] = {"people": int(assoc.keypoints.shape[2]), "associate_s": t_assoc,
                              "tracks": full.num_tracks, "kept_with_default_max_people": kept,
                              **summarize(cams, assoc.keypoints, xyz, valid)}
    print("openpose", json.dumps(out["openpose_single"], indent=1), flush=True)

    # Reference timing: the detector (+ tiles) on every frame instead of ROIs from the 3D estimate.
    if args.ref_frames > 0:
        capture = read_capture(work / "pose2sim_multi", require_keypoints=False)
        ref = {}
        for name, roi3d in (("roi_from_3d", True), ("detector_every_frame", False)):
            cfg = Config(detect=DetectConfig(threads=args.threads, roi_from_3d=roi3d, max_people=2))
            r = run_detection(capture, cfg, progress=False, frames=(0, args.ref_frames))
            ref[name] = r.stats.summary()
        ref["speedup_detect_ms_per_frame"] = (ref["detector_every_frame"]["detect_ms_per_frame"]
                                              / ref["roi_from_3d"]["detect_ms_per_frame"])
        out["reference_timing_multi"] = ref
        print("reference", json.dumps(ref, indent=1), flush=True)
    return out


def results_md(out: dict) -> str:
    def cams_row(d):
        return " / ".join(f"{v:.1f}" for v in d.values())

    lines = [MARK_BEGIN, "## 2D front end on real video (bench/detect.py, issue 8)", "",
             f"Machine: {out['machine']}; onnxruntime CPU, {out.get('threads', 2)} threads. Date: {out['date']}. "
             f"Data: Pose2Sim demo, 4 portrait cameras (1088x1920), {out['frames']} frames at 60 fps. Command:", "",
             f"    .venv/bin/python {out['command']}", "",
             "Models: BlazePose detector + landmark (full), ONNX. Tracked people get ROIs from their projected 3D "
             "estimate; the detector (whole frame + 3 tiles) runs on the first frame, when a person is lost and every "
             "30 frames. Reprojection: robust triangulation (h4djax.triangulate, default config) of the associated "
             "detections; median pixel distance over detections with confidence > 0.5 (outlier views included). "
             "LOO: triangulate with the 3 other cameras, project into the held-out one.", "",
             "| input | people | frames with 3D for all | ID switches | reproj median px (cam01/02/03/04) | "
             "reproj median px | LOO median px (cam01/02/03/04) | LOO median px |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in (("single", "videos_single, ours"), ("multi", "videos_multi, ours"),
                       ("openpose_single", "videos_single, shipped OpenPose + h4djax.associate (max_people=1)")):
        r = out[key]
        lines.append(f"| {label} | {r['people']} | {r['frames_all_people_3d']}/{r['frames']} | {r['id_switches']} | "
                     f"{cams_row(r['reproj_median_px_per_cam'])} | {r['reproj_median_px_all']:.1f} | "
                     f"{cams_row(r['loo_median_px_per_cam'])} | {r['loo_median_px_all']:.1f} |")
    k = out["openpose_single"]["kept_with_default_max_people"]
    lines += ["", f"With the default max_people = 2 the OpenPose association keeps {len(k)} tracks: "
              + "; ".join(f"track {i}: {x['frames_2plus_views']} frames in >= 2 views, detections per camera "
                          f"{x['views_used']}, mean position {x['mean_position_m']} m" for i, x in enumerate(k))
              + " (the second is lab staff in the background of cam01 and cam02; the BlazePose runs above form no "
              "such track)."]
    lines += ["", "| run | frames/s (whole front end) | detector frames | detector ms/call | keypoint ms/person | "
              "detect ms/frame (4 views) | association ms/frame | decode ms/frame |",
              "|---|---|---|---|---|---|---|---|"]
    for key in ("single", "multi"):
        s = out[key]["stats"]
        lines.append(f"| videos_{key} | {s['frames_per_s']:.2f} | {s['detector_frames']} | "
                     f"{s['detector_ms_per_call']:.0f} | {s['keypoint_ms_per_person']:.0f} | "
                     f"{s['detect_ms_per_frame']:.0f} | {s['associate_ms_per_frame']:.0f} | "
                     f"{s['decode_ms_per_frame']:.0f} |")
    if "reference_timing_multi" in out:
        ref = out["reference_timing_multi"]
        for name in ("roi_from_3d", "detector_every_frame"):
            s = ref[name]
            lines.append(f"| videos_multi first frames, {name} | {s['frames_per_s']:.2f} | {s['detector_frames']} | "
                         f"{s['detector_ms_per_call']:.0f} | {s['keypoint_ms_per_person']:.0f} | "
                         f"{s['detect_ms_per_frame']:.0f} | {s['associate_ms_per_frame']:.0f} | "
                         f"{s['decode_ms_per_frame']:.0f} |")
        lines += ["", f"Ratio (same run): detector on every frame / ROIs from 3D, detect ms per frame: "
                      f"{ref['speedup_detect_ms_per_frame']:.2f}x."]
    lines += ["", "The machine is shared (load average about 10 on 2 cores during the run): absolute times are upper "
                  "bounds; ratios come from the same run. Details: docs/real_data_report.md.", MARK_END]
    return "\n".join(lines) + "\n"


def write_results_md(path: Path, section: str) -> None:
    """Replace this benchmark's section of the shared RESULTS.md (between the markers) or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        tail = rest.split(MARK_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared/data/pose2sim_demo")
    ap.add_argument("--work", default="/tmp/h4djax_bench_detect", help="capture directories (+ cached keypoints)")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "real_data"))
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--ref-frames", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-people-single", type=int, default=DetectConfig().max_people)
    ap.add_argument("--max-people-multi", type=int, default=DetectConfig().max_people)
    ap.add_argument("--fresh", action="store_true", help="ignore cached keypoints2d.npz")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--quick", action="store_true", help="8 frames, no RESULTS.md / contact sheets")
    args = ap.parse_args()
    args.sheets = not args.quick
    if args.quick:
        args.frames, args.ref_frames = 8, 4
        args.work = args.work + "_quick"
    out = run(args)
    out["threads"] = args.threads
    out["config"] = dataclasses.asdict(DetectConfig())
    (ROOT / "bench" / ("detect_quick.json" if args.quick else "detect.json")).write_text(
        json.dumps(out, indent=1, default=float))
    if not args.quick:
        write_results_md(ROOT / "bench" / "RESULTS.md", results_md(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
