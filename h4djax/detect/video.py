"""Synchronized multi-camera frame readers: one video file or one image folder per camera.

    reader = MultiCameraReader({"cam01": "videos/cam01.mp4", "cam02": "frames/cam02/"},
                               calibration_sizes={"cam01": (1088, 1920), "cam02": (1088, 1920)})
    for t, frames in reader.frames():      # frames: list over cameras of RGB uint8 [H, W, 3] or None (missing)
        ...

Problems are reported with the camera and the file, and handled where a safe choice exists:
- cameras with different frame counts: truncated to the shortest with a warning (`on_length_mismatch="error"`
  raises VideoError instead); a video that ends earlier than its header said truncates the same way;
- image folders with gaps in the frame numbering (`cam02/00017.jpg` missing): that camera yields None for the
  frame, with one warning listing the gaps (`on_missing="error"` raises instead);
- frame size vs calibration: a uniform scale (video downscaled from the calibrated resolution) is handled by
  `to_calibration` scale factors (keypoints in video pixels x scale = calibration pixels); a small non-uniform
  difference (up to `size_tolerance` of the side, default 1%, e.g. the Pose2Sim demo's 1080-pixel-wide videos
  with a 1088-wide calibration) is assumed to be padding at the right/bottom edge and keypoints are used as they
  are, with a warning; anything else raises VideoError.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from h4djax.detect.errors import VideoError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_TRAILING_INT = re.compile(r"(\d+)$")


@dataclass
class CameraSource:
    """One camera's frames. kind: "video" or "images"; size: (width, height) px; frame_numbers: for image
    folders, the number of each file (from the trailing digits of its name) or its rank if names have none."""

    name: str
    path: Path
    kind: str
    size: tuple[int, int]
    num_frames: int
    fps: float = 0.0
    files: list[Path] = field(default_factory=list)
    frame_numbers: list[int] = field(default_factory=list)
    index: dict[int, Path] = field(default_factory=dict)
    """Image folders: timeline index (frame number - first number over all folders) -> file."""


def _open_video(name: str, path: Path) -> CameraSource:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(str(path), name, "cannot open the video (missing codec or not a video file)")
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise VideoError(str(path), name, "the video has no readable frame")
    h, w = frame.shape[:2]  # the decoded frame is the truth; header sizes can differ (rotation metadata)
    return CameraSource(name, path, "video", (w, h), max(n, 1), fps)


def _open_folder(name: str, path: Path) -> CameraSource:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise VideoError(str(path), name, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    nums = [_TRAILING_INT.search(p.stem) for p in files]
    if all(nums):
        numbers = [int(m.group(1)) for m in nums]
        if len(set(numbers)) != len(numbers):
            raise VideoError(str(path), name, "two image files carry the same frame number")
        order = np.argsort(numbers, kind="stable")
        files = [files[i] for i in order]
        numbers = [numbers[i] for i in order]
    else:
        numbers = list(range(len(files)))
    first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise VideoError(str(files[0]), name, "cannot decode the image")
    h, w = first.shape[:2]
    return CameraSource(name, path, "images", (w, h), len(files), 0.0, files, numbers)


def open_camera(name: str, path: str | Path) -> CameraSource:
    """A camera from a video file or a folder of images."""
    path = Path(path)
    if not path.exists():
        raise VideoError(str(path), name, "no such file or folder")
    return _open_folder(name, path) if path.is_dir() else _open_video(name, path)


def _size_of(calibration_sizes, name: str, i: int):
    if calibration_sizes is None:
        return None
    if isinstance(calibration_sizes, Mapping):
        return calibration_sizes.get(name)
    if hasattr(calibration_sizes, "size") and hasattr(calibration_sizes, "names"):  # a Cameras pytree
        names = list(calibration_sizes.names)
        return np.asarray(calibration_sizes.size)[names.index(name)] if name in names else None
    return np.asarray(calibration_sizes)[i]


class MultiCameraReader:
    """Synchronized frames of several cameras (see the module docstring for what is checked and handled)."""

    def __init__(
        self,
        sources: Mapping[str, str | Path] | Sequence[str | Path],
        *,
        calibration_sizes=None,
        on_length_mismatch: str = "truncate",
        on_missing: str = "skip",
        size_tolerance: float = 0.01,
    ):
        if on_length_mismatch not in ("truncate", "error") or on_missing not in ("skip", "error"):
            raise ValueError("on_length_mismatch: truncate|error, on_missing: skip|error")
        if not isinstance(sources, Mapping):
            sources = {Path(p).stem if not Path(p).is_dir() else Path(p).name: p for p in sources}
            if len(sources) == 0:
                raise VideoError("<cameras>", None, "no camera given")
        self.cameras = [open_camera(n, p) for n, p in sources.items()]
        if len(self.cameras) == 0:
            raise VideoError("<cameras>", None, "no camera given")
        self.names = [c.name for c in self.cameras]
        self.messages: list[str] = []
        self.on_missing = on_missing
        self._check_lengths(on_length_mismatch)
        self.to_calibration = self._check_sizes(calibration_sizes, size_tolerance)

    # -------------------------------------------------------------------------------------------------------
    def _warn(self, msg: str) -> None:
        self.messages.append(msg)
        warnings.warn(msg, stacklevel=3)

    def _check_lengths(self, policy: str) -> None:
        folders = [c for c in self.cameras if c.kind == "images"]
        # Image folders are aligned on frame numbers: the common timeline is the union of all numbers, starting
        # at the smallest; videos are aligned on their frame index.
        self.first_number = min((c.frame_numbers[0] for c in folders), default=0)
        lengths = {}
        for c in self.cameras:
            if c.kind == "images":
                last = c.frame_numbers[-1] - self.first_number + 1
                have = set(c.frame_numbers)
                gaps = [n for n in range(self.first_number, c.frame_numbers[-1] + 1) if n not in have]
                if gaps:
                    shown = ", ".join(str(g) for g in gaps[:10]) + (" ..." if len(gaps) > 10 else "")
                    msg = f"{c.path} (camera '{c.name}'): {len(gaps)} missing frame(s), numbers {shown}"
                    if self.on_missing == "error":
                        raise VideoError(str(c.path), c.name, f"{len(gaps)} missing frame(s), numbers {shown}")
                    self._warn(msg + "; that camera has no image (no detections) at those frames")
                lengths[c.name] = last
                c.index = {n - self.first_number: f for n, f in zip(c.frame_numbers, c.files)}
            else:
                lengths[c.name] = c.num_frames
        self.lengths = lengths
        n = min(lengths.values())
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
            if policy == "error":
                raise VideoError("<cameras>", None, f"cameras have different frame counts ({detail})")
            self._warn(f"cameras have different frame counts ({detail}); using the first {n} frames of each")
        self.num_frames = n

    def _check_sizes(self, calibration_sizes, tol: float) -> np.ndarray:
        scale = np.ones((len(self.cameras), 2))
        for i, c in enumerate(self.cameras):
            cal = _size_of(calibration_sizes, c.name, i)
            if cal is None:
                continue
            cw, ch = (int(v) for v in np.asarray(cal).reshape(2))
            vw, vh = c.size
            if (cw, ch) == (vw, vh):
                continue
            sx, sy = cw / vw, ch / vh
            where = f"{c.path} (camera '{c.name}')"
            if abs(sx - sy) <= 0.005 * max(sx, sy):
                scale[i] = (sx, sy)
                self._warn(f"{where}: frames are {vw}x{vh}, calibration {cw}x{ch} (uniform scale {sx:.4f}); "
                           f"keypoints are scaled to calibration pixels")
            elif abs(cw - vw) <= tol * cw and abs(ch - vh) <= tol * ch:
                self._warn(f"{where}: frames are {vw}x{vh}, calibration {cw}x{ch}; assuming padding at the "
                           f"right/bottom edge, keypoints used unchanged")
            else:
                raise VideoError(str(c.path), c.name,
                                 f"frames are {vw}x{vh} but the calibration says {cw}x{ch} (not a uniform scale, "
                                 f"more than {tol:.0%} apart): wrong camera order or wrong calibration?")
        return scale

    # -------------------------------------------------------------------------------------------------------
    def frames(self, start: int = 0, stop: int | None = None, step: int = 1
               ) -> Iterator[tuple[int, list[np.ndarray | None]]]:
        """Yield (frame index, [RGB uint8 frame or None per camera]) for frames start..stop-1 (sequential decode).

        A video that ends before `num_frames` stops the iteration for all cameras, with a warning."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        caps: list[cv2.VideoCapture | None] = []
        for c in self.cameras:
            if c.kind == "video":
                cap = cv2.VideoCapture(str(c.path))
                if start > 0:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
                caps.append(cap)
            else:
                caps.append(None)
        pos = [start] * len(self.cameras)
        try:
            for t in range(start, stop, step):
                out: list[np.ndarray | None] = []
                for i, c in enumerate(self.cameras):
                    if c.kind == "video":
                        cap = caps[i]
                        while pos[i] < t:  # skip frames when step > 1 (grab does not decode)
                            cap.grab()
                            pos[i] += 1
                        ok, fr = cap.read()
                        pos[i] += 1
                        if not ok:
                            self._warn(f"{c.path} (camera '{c.name}'): video ends at frame {t} although its header "
                                       f"says {c.num_frames}; stopping all cameras there")
                            self.num_frames = t
                            return
                        out.append(cv2.cvtColor(fr, cv2.COLOR_BGR2RGB))
                    else:
                        f = c.index.get(t)
                        if f is None:
                            out.append(None)
                            continue
                        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
                        if img is None:
                            if self.on_missing == "error":
                                raise VideoError(str(f), c.name, "cannot decode the image")
                            self._warn(f"{f} (camera '{c.name}'): cannot decode the image; treated as missing")
                            out.append(None)
                            continue
                        if (img.shape[1], img.shape[0]) != c.size:
                            raise VideoError(str(f), c.name, f"image is {img.shape[1]}x{img.shape[0]}, the "
                                             f"camera's first image is {c.size[0]}x{c.size[1]}")
                        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
                yield t, out
        finally:
            for cap in caps:
                if cap is not None:
                    cap.release()

    def read(self, t: int) -> list[np.ndarray | None]:
        """One synchronized frame (seeks; for whole sequences iterate `frames()`)."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside [0, {self.num_frames})")
        for _, out in self.frames(t, t + 1):
            return out
        raise VideoError("<cameras>", None, f"frame {t} could not be read")

    def keypoints_to_calibration(self, kpts: np.ndarray) -> np.ndarray:
        """Scale keypoints f[..., cams, people, kpts, 3] from video pixels to calibration pixels."""
        kpts = np.array(kpts, np.float64, copy=True)
        kpts[..., :2] *= self.to_calibration[:, None, None, :]  # cams axis is the 4th from the end
        return kpts
