"""OpenPose JSON folders (`<root>/camXX_json/*.json`) -> keypoint arrays, and BODY_25B -> COCO-17.

Each JSON file is one frame of one view: ``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, ...]}, ...]}`` in
pixels, with (0, 0, 0) for a missing keypoint. The frame number is the last integer in the file name
(`cam01.0012.json`, `cam01_000000000012_keypoints.json`); views are the sub-folders in sorted order, named after the
folder without its `_json` suffix.

BODY_25B (OpenPose's experimental 25-keypoint body model, used by Pose2Sim) puts the 17 COCO keypoints first, in
COCO order: nose, l_eye, r_eye, l_ear, r_ear, l_shoulder, r_shoulder, l_elbow, r_elbow, l_wrist, r_wrist, l_hip,
r_hip, l_knee, r_knee, l_ankle, r_ankle; then 17 upper neck, 18 head top, 19-21 left big toe / small toe / heel,
22-24 right big toe / small toe / heel. So COCO-17 is ``kp[..., :17, :]`` (`BODY25B_TO_COCO17`). This differs from
the older BODY_25 model (1 = neck, 2 = right shoulder, 8 = mid hip ...): tests check on the real Pose2Sim
detections that keypoints 1-4 are face points next to the nose and that the left/right limb chains are consistent.

Person order: OpenPose lists people in no meaningful order, so each view's people are sorted by their summed
keypoint confidence (highest first). This does *not* associate people across views or frames
(`associated=False` in a capture).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from h4djax.errors import CaptureError

#: BODY_25B indices of the COCO-17 keypoints (the first 17, already in COCO order).
BODY25B_TO_COCO17 = np.arange(17)

BODY25B_NAMES = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
    "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle", "upper_neck", "head_top",
    "l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel",
)


@dataclass(frozen=True)
class OpenPoseDetections:
    """Detections of one capture. keypoints: float32 [frames, cams, people, 25, 3] (x px, y px, confidence; 0 =
    missing, people padded with zeros); frames: frame numbers [frames]; camera_names: one per view folder."""

    keypoints: np.ndarray
    frames: np.ndarray
    camera_names: tuple[str, ...]

    def coco17(self) -> np.ndarray:
        """float32 [frames, cams, people, 17, 3] in COCO-17 order."""
        return body25b_to_coco17(self.keypoints)


def body25b_to_coco17(keypoints: np.ndarray) -> np.ndarray:
    """[..., 25, 3] BODY_25B -> [..., 17, 3] COCO-17 (see the module docstring for the order)."""
    keypoints = np.asarray(keypoints)
    if keypoints.shape[-2] != 25:
        raise ValueError(f"expected 25 BODY_25B keypoints on axis -2, got shape {keypoints.shape}")
    return keypoints[..., BODY25B_TO_COCO17, :]


def _frame_number(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    if not numbers:
        raise CaptureError(f"{path}: cannot find a frame number in the file name")
    return int(numbers[-1])


def _read_view(path: Path) -> list[np.ndarray]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CaptureError(f"{path}: not valid JSON ({e})") from None
    people = data.get("people") if isinstance(data, dict) else None
    if not isinstance(people, list):
        raise CaptureError(f"{path}: expected an object with a 'people' list")
    out = []
    for i, person in enumerate(people):
        kp = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not kp:
            continue
        arr = np.asarray(kp, dtype=np.float64)
        if arr.shape != (75,):
            raise CaptureError(f"{path}: people[{i}].pose_keypoints_2d has {arr.size} values; expected 75 "
                               "(25 BODY_25B keypoints x (x, y, confidence))")
        arr = arr.reshape(25, 3)
        bad = ~np.isfinite(arr).all(axis=1)
        arr[bad] = 0.0  # non-finite values are missing keypoints
        out.append(arr)
    # Most confident person first (OpenPose's own order carries no identity).
    out.sort(key=lambda a: -float(a[:, 2].sum()))
    return out


def read_openpose(root: str | Path, max_people: int | None = None) -> OpenPoseDetections:
    """Read `root/<view>_json/*.json` (one sub-folder per view) into an `OpenPoseDetections`.

    Frames are the union of the frame numbers of all views (a view without a file for a frame has no detections
    there). max_people keeps the most confident people of each view (default: as many as the busiest view-frame).
    """
    root = Path(root)
    if not root.is_dir():
        raise CaptureError(f"{root}: no such folder of OpenPose views")
    views = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))
    if not views:
        raise CaptureError(f"{root}: no sub-folders with OpenPose .json files (expected e.g. cam01_json/)")
    per_view: list[dict[int, list[np.ndarray]]] = []
    for view in views:
        frames: dict[int, list[np.ndarray]] = {}
        for f in sorted(view.glob("*.json")):
            n = _frame_number(f)
            if n in frames:
                raise CaptureError(f"{f}: frame number {n} appears twice in {view}")
            frames[n] = _read_view(f)
        per_view.append(frames)
    frame_ids = np.array(sorted(set().union(*[set(v) for v in per_view])), dtype=np.int64)
    most = max((len(p) for v in per_view for p in v.values()), default=0)
    P = max(1, most if max_people is None else min(max_people, most))
    kp = np.zeros((len(frame_ids), len(views), P, 25, 3), dtype=np.float32)
    index = {int(f): i for i, f in enumerate(frame_ids)}
    for c, view in enumerate(per_view):
        for f, people in view.items():
            for p, arr in enumerate(people[:P]):
                kp[index[f], c, p] = arr
    names = tuple(re.sub(r"_json$", "", v.name) for v in views)
    return OpenPoseDetections(keypoints=kp, frames=frame_ids, camera_names=names)
