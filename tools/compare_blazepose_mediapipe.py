"""End-to-end check of h4djax.detect's BlazePose pipeline against MediaPipe itself (the upstream graph).

Two steps, two virtualenvs (MediaPipe is never an h4djax dependency):

    python3.11 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.14 "numpy<2"
    /tmp/mpvenv/bin/python tools/compare_blazepose_mediapipe.py mediapipe --out /tmp/mp_ref.npz \\
        /work/shared/data/pose2sim_demo/videos_single/cam0{1,2,3,4}.mp4
    .venv/bin/python tools/compare_blazepose_mediapipe.py compare /tmp/mp_ref.npz

Step 1 runs MediaPipe Pose (model_complexity=1 = pose_landmark_full, static image mode, no smoothing) on frames
0/30/60/90 of each video and stores the decoded frames (RGB) with MediaPipe's first detection (4 keypoints),
its ROI (`pose_rect_from_detection`) and the 33 landmarks. Frames are stored because two OpenCV builds can decode
the same H.264 stream to slightly different pixels (we measured up to 22 levels on cam02 of the Pose2Sim demo).
Step 2 runs h4djax.detect on the same pixels and reports the differences: detector keypoints and ROI, landmarks
on MediaPipe's own ROI (isolates the landmark stage), and landmarks end to end.

MediaPipe's normalized coordinates times the image size are used as OpenCV pixel coordinates (that is how its
ImageToTensorCalculator and LandmarkProjectionCalculator use them), so no half-pixel shift is applied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FRAMES = (0, 30, 60, 90)


def run_mediapipe(videos: list[Path], out: Path) -> None:
    import cv2
    import mediapipe.python.solutions.pose as mp_pose
    from mediapipe.python.solution_base import SolutionBase

    graph = SolutionBase(
        binary_graph_path=mp_pose._BINARYPB_FILE_PATH,
        side_inputs={"model_complexity": 1, "smooth_landmarks": False, "enable_segmentation": False,
                     "smooth_segmentation": False, "use_prev_landmarks": False},
        outputs=["pose_landmarks", "pose_detection", "pose_rect_from_detection"],
    )
    res = {}
    for video in videos:
        cap = cv2.VideoCapture(str(video))
        for t in range(max(FRAMES) + 1):
            ok, frame = cap.read()
            if not ok:
                break
            if t not in FRAMES:
                continue
            img = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            h, w = img.shape[:2]
            r = graph.process({"image": img})
            key = f"{video.stem}_{t}"
            res[f"{key}_image"] = img
            if r.pose_detection is None:
                continue
            d, rect = r.pose_detection, r.pose_rect_from_detection
            res[f"{key}_score"] = np.array(d.score[0])
            res[f"{key}_kps"] = np.array([(k.x * w, k.y * h) for k in d.location_data.relative_keypoints])
            res[f"{key}_roi"] = np.array([rect.x_center * w, rect.y_center * h, rect.width * w, rect.height * h,
                                          rect.rotation])
            res[f"{key}_landmarks"] = np.array([(p.x * w, p.y * h, p.visibility)
                                                for p in r.pose_landmarks.landmark])
    graph.close()
    np.savez_compressed(out, **res)
    print(f"wrote {out} ({len([k for k in res if k.endswith('_image')])} frames)")


def compare(ref_path: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from h4djax.detect import BlazePoseDetector, BlazePoseLandmarker, load_model_card

    det = BlazePoseDetector(load_model_card(REPO / "models/blazepose_detector.onnx"), device="cpu")
    lmk = BlazePoseLandmarker(load_model_card(REPO / "models/blazepose_landmark_full.onnx"), device="cpu")
    ref = np.load(ref_path)
    keys = sorted(k[:-len("_image")] for k in ref.files if k.endswith("_image"))
    rows, e_roi, e_e2e = [], [], []
    for key in keys:
        img = ref[f"{key}_image"]
        if f"{key}_roi" not in ref.files:
            rows.append({"frame": key, "mediapipe": "no detection"})
            continue
        d = det(img)
        row = {"frame": key, "people": d.num_people}
        if d.num_people:
            row["score_diff"] = float(abs(d.scores[0] - ref[f"{key}_score"]))
            row["det_keypoints_max_px"] = float(np.abs(d.keypoints[0] - ref[f"{key}_kps"]).max())
            row["roi_center_px"] = float(np.abs(d.rois[0, :2] - ref[f"{key}_roi"][:2]).max())
            row["roi_side_px"] = float(abs(d.rois[0, 2] - ref[f"{key}_roi"][2]))
            row["roi_rotation_rad"] = float(abs(d.rois[0, 4] - ref[f"{key}_roi"][4]))
        ref_lm = ref[f"{key}_landmarks"]
        on_ref_roi = lmk(img, ref[f"{key}_roi"][None]).landmarks[0]
        e = np.sqrt(((on_ref_roi[:, :2] - ref_lm[:, :2]) ** 2).sum(1))
        e_roi.append(e)
        row["landmarks_on_mp_roi_median_px"] = float(np.median(e))
        row["landmarks_on_mp_roi_max_px"] = float(e.max())
        if d.num_people:
            own = lmk(img, d.rois[:1]).landmarks[0]
            e2 = np.sqrt(((own[:, :2] - ref_lm[:, :2]) ** 2).sum(1))
            e_e2e.append(e2)
            row["landmarks_end_to_end_median_px"] = float(np.median(e2))
        rows.append(row)
    e_roi, e_e2e = np.concatenate(e_roi), np.concatenate(e_e2e)
    summary = {
        "frames": len(keys),
        "landmarks_on_mp_roi_px": {"median": float(np.median(e_roi)), "p90": float(np.percentile(e_roi, 90)),
                                   "max": float(e_roi.max())},
        "landmarks_end_to_end_px": {"median": float(np.median(e_e2e)), "p90": float(np.percentile(e_e2e, 90)),
                                    "max": float(e_e2e.max())},
        "det_keypoints_max_px": max(r.get("det_keypoints_max_px", 0.0) for r in rows),
        "roi_center_max_px": max(r.get("roi_center_px", 0.0) for r in rows),
    }
    return {"rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("mediapipe")
    a.add_argument("videos", type=Path, nargs="+")
    a.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("compare")
    b.add_argument("ref", type=Path)
    b.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "mediapipe":
        run_mediapipe(args.videos, args.out)
    else:
        rep = compare(args.ref)
        text = json.dumps(rep, indent=1)
        if args.json:
            args.json.write_text(text)
        for r in rep["rows"]:
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
        print(json.dumps(rep["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
