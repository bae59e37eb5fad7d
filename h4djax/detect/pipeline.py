"""Running the 2D front end over a whole capture: detection, identity across views and over time, caching.

    kp = detect_capture(capture, config)        # f32[frames, cams, people, 17, 3], associated, consistent ids
    capture = ensure_keypoints(capture, config) # what `h4d fit` calls: detect, or associate given detections

Per frame (``CaptureDetector.step``), following Harmony4D (PIPELINE.md 1.1: "close to contact the boxes/ROIs come
from projecting the previous 3D estimate into each view"):

1. Tracked people: their last 3D keypoints (``h4djax.associate.Tracker``) are projected into every view
   (``geometry.project_np``) and turned into ROIs (``PoseFrontEnd.rois_from_keypoints``); the keypoint model runs
   on those ROIs. Each such detection carries its track as a hint.
2. Detector fallback on the first frame, whenever a tracked person is found in fewer than ``min_views`` views or
   was not matched in the previous frame, every ``redetect_every`` frames (people entering), and while nobody is
   tracked. The detector also runs on ``tiles`` square tiles of the frame: BlazePose letterboxes the whole portrait
   frame to 224 px and mostly reports only the most prominent person. Candidates are de-duplicated (ROIs, then OKS
   of the keypoints); detections that duplicate a tracked person's (OKS > ``filter.oks_threshold``) are dropped.
3. Identity: ``h4djax.associate.associate_frames`` (2D filter incl. the OKS duplicate filter, ray-distance
   clustering, triangulation, OKS re-assignment) and ``Tracker.update`` (3D distance, hints).

At the end the ``max_people`` most persistent multi-view tracks are kept (``select_tracks``). Keypoints are in
calibration pixels (``MultiCameraReader.to_calibration``). ``detect_capture`` caches the result as
``keypoints2d.npz`` in the capture directory with a hash of everything that determines it (settings, model files,
calibration, media), and reuses it when the hash matches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from jaxtyping import Float, UInt8

from h4djax.associate import (
    Association, associate_frames, associate_sequence, finish_association, make_tracker, swap_people,
)
from h4djax.associate.geometry import oks_np
from h4djax.config import Config, DetectConfig, FilterConfig, to_dict
from h4djax.detect.blazepose import Detections
from h4djax.detect.frontend import PoseFrontEnd
from h4djax.detect.video import MultiCameraReader
from h4djax.errors import CaptureError
from h4djax.geometry.cameras import Cameras, to_numpy
from h4djax.geometry.cameras_np import project_np

__all__ = ["CaptureDetector", "DetectionResult", "DetectStats", "capture_directory", "config_hash",
           "detect_capture", "detect_people", "ensure_keypoints", "run_detection", "tile_offsets"]

REPO = Path(__file__).resolve().parents[2]
CACHE_FILE = "keypoints2d.npz"
#: Settings that do not change the result (excluded from the cache hash).
_NOT_HASHED = ("cache", "threads")


@dataclass
class DetectStats:
    """Timings (s) and counts of a run: frames, wall time, detector calls (one per image or tile) and their time,
    keypoint-model people (one per ROI) and their time, frames on which the detector ran."""

    frames: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    detector_calls: int = 0
    detector_seconds: float = 0.0
    detector_frames: int = 0
    keypoint_people: int = 0
    keypoint_seconds: float = 0.0
    associate_seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        f = max(self.frames, 1)
        return {
            "frames": self.frames, "seconds": self.seconds, "frames_per_s": self.frames / max(self.seconds, 1e-9),
            "detector_frames": self.detector_frames, "detector_calls": self.detector_calls,
            "detector_ms_per_call": 1e3 * self.detector_seconds / max(self.detector_calls, 1),
            "keypoint_people": self.keypoint_people,
            "keypoint_ms_per_person": 1e3 * self.keypoint_seconds / max(self.keypoint_people, 1),
            "decode_ms_per_frame": 1e3 * self.decode_seconds / f,
            "detect_ms_per_frame": 1e3 * (self.detector_seconds + self.keypoint_seconds) / f,
            "associate_ms_per_frame": 1e3 * self.associate_seconds / f,
        }


@dataclass(frozen=True)
class DetectionResult:
    """keypoints f32[frames, cams, people, 17, 3] (calibration px, associated); association details; stats; fps."""

    keypoints: np.ndarray
    association: Association
    stats: DetectStats
    fps: float
    camera_names: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------------------
# Detection with tiles
# --------------------------------------------------------------------------------------------------------------
def tile_offsets(width: int, height: int, tiles: int) -> list[tuple[int, int, int]]:
    """Square tiles (x0, y0, side) along the long side of a width x height image, evenly spaced from one end to
    the other (overlapping); none when the image is nearly square (the whole frame is the tile) or tiles <= 0."""
    side = min(width, height)
    long = max(width, height)
    if tiles <= 0 or long - side < 0.1 * long:
        return []
    offs = np.linspace(0, long - side, tiles) if tiles > 1 else np.array([(long - side) / 2.0])
    offs = np.unique(np.rint(offs).astype(int))
    return [(int(o), 0, side) if width > height else (0, int(o), side) for o in offs]


def _shift(det: Detections, dx: float, dy: float) -> Detections:
    d = np.array([dx, dy])
    return Detections(boxes=det.boxes + np.tile(d, 2), scores=det.scores, keypoints=det.keypoints + d,
                      rois=np.concatenate([det.rois[:, :2] + d, det.rois[:, 2:]], 1))


def _dedupe_rois(rois: np.ndarray, scores: np.ndarray, *, centre: float = 0.25, size: float = 1.5) -> np.ndarray:
    """Indices of ROIs kept, best score first: a ROI whose centre lies within ``centre`` x side of a kept ROI of
    similar size (ratio < ``size``) is the same person (the same body seen in the full frame and in a tile)."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        dup = False
        for j in kept:
            side = max(rois[i, 2], rois[j, 2])
            ratio = max(rois[i, 2], rois[j, 2]) / max(min(rois[i, 2], rois[j, 2]), 1e-9)
            if np.hypot(*(rois[i, :2] - rois[j, :2])) < centre * side and ratio < size:
                dup = True
                break
        if not dup:
            kept.append(int(i))
    return np.asarray(kept, np.int64)


def _oks_dedupe(kp: np.ndarray, scores: np.ndarray, threshold: float, conf: float) -> np.ndarray:
    """Indices kept (best score first) after dropping poses with OKS > threshold to a kept pose."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if kept and (oks_np(kp[i][None], kp[kept], conf=conf) > threshold).any():
            continue
        kept.append(int(i))
    return np.asarray(kept, np.int64)


def detect_people(
    front: PoseFrontEnd,
    image: UInt8[np.ndarray, "H W 3"],
    cfg: DetectConfig,
    *,
    oks_threshold: float = 0.7,
    skip_rois: Float[np.ndarray, "n 5"] | None = None,
    stats: DetectStats | None = None,
) -> tuple[Float[np.ndarray, "people 17 3"], Float[np.ndarray, " people"]]:
    """People in one image from the detector (whole frame + ``cfg.tiles`` tiles): COCO-17 keypoints (image px)
    and presence scores. Candidates whose ROI coincides with one of ``skip_rois`` (already tracked) are skipped."""
    stats = stats if stats is not None else DetectStats()
    h, w = image.shape[:2]
    dets = []
    for x0, y0, side in [(0, 0, 0)] + tile_offsets(w, h, cfg.tiles):
        crop = image if side == 0 else np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
        t0 = time.perf_counter()
        d = front.detect(crop)
        stats.detector_seconds += time.perf_counter() - t0
        stats.detector_calls += 1
        dets.append(d if side == 0 else _shift(d, x0, y0))
    rois = np.concatenate([d.rois for d in dets], 0)
    if front.kcard.kind != "blazepose_landmark" and len(rois):
        rois = np.concatenate([front.rois_from_detections(d) for d in dets], 0)
    scores = np.concatenate([d.scores for d in dets], 0)
    if len(rois) == 0:
        return np.zeros((0, 17, 3)), np.zeros(0)
    keep = _dedupe_rois(rois, scores)
    rois, scores = rois[keep], scores[keep]
    if skip_rois is not None and len(skip_rois):
        sk = np.asarray(skip_rois)[np.isfinite(skip_rois).all(1)]
        if len(sk):
            both = np.concatenate([sk, rois], 0)
            prio = np.concatenate([np.full(len(sk), np.inf), scores])
            kept = _dedupe_rois(both, prio, centre=0.15, size=1.4)
            new = np.sort(kept[kept >= len(sk)] - len(sk))
            rois, scores = rois[new], scores[new]
    if len(rois) == 0:
        return np.zeros((0, 17, 3)), np.zeros(0)
    t0 = time.perf_counter()
    fk = front.keypoints(image, rois)
    stats.keypoint_seconds += time.perf_counter() - t0
    stats.keypoint_people += len(rois)
    kp, presence = fk.coco17, fk.scores
    ok = presence >= cfg.min_pose_score
    kp, presence = kp[ok], presence[ok]
    keep = _oks_dedupe(kp, presence, oks_threshold, cfg.assoc_conf)
    return kp[keep], presence[keep]


# --------------------------------------------------------------------------------------------------------------
# The per-frame loop
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _FrameRecord:
    keypoints: np.ndarray  # [C, D, 17, 3] calibration px
    labels: np.ndarray  # [C, D]
    slot_ids: np.ndarray  # [S]
    xyz: np.ndarray  # [S, 17, 3]
    valid: np.ndarray  # [S, 17]


@dataclass
class CaptureDetector:
    """Online detection + identity over a capture's frames (module docstring). ``step(t, images)`` per frame in
    order, then ``finish()``."""

    cams: Cameras
    front: PoseFrontEnd
    cfg: DetectConfig
    filter_cfg: FilterConfig
    fps: float
    to_calibration: np.ndarray | None = None
    """f[cams, 2] video px -> calibration px scale per camera (``MultiCameraReader.to_calibration``)."""
    stats: DetectStats = field(default_factory=DetectStats)

    def __post_init__(self):
        self.cams = to_numpy(self.cams)
        C = self.cams.num_cams
        self.scale = np.ones((C, 2)) if self.to_calibration is None else np.asarray(self.to_calibration, float)
        self.tracker = make_tracker(self.cfg, self.fps)
        self.records: list[_FrameRecord] = []
        self._lost = False

    # ----------------------------------------------------------------------------------------------------------
    def _projected_rois(self, t: int, images: list) -> tuple[list[np.ndarray], np.ndarray]:
        """ROIs f[tracks, 5] per view (video px, NaN = not in that view) of the tracks seen recently, and their
        ids."""
        C = self.cams.num_cams
        live = [k for k in self.tracker.live(t) if t - k.last <= self.cfg.roi_max_age]
        ids = np.array([k.id for k in live], np.int64)
        if not self.cfg.roi_from_3d or len(ids) == 0:
            return [np.zeros((0, 5))] * C, np.zeros(0, np.int64)
        X, V = self.tracker.state(ids)
        uv, front = project_np(self.cams, X)  # [C, T, 17, 2] calibration px
        size = np.asarray(self.cams.size, np.float64)
        rois = []
        for c in range(C):
            if images[c] is None:
                rois.append(np.full((len(ids), 5), np.nan))
                continue
            w, h = size[c]
            inside = ((uv[c, ..., 0] > -0.05 * w) & (uv[c, ..., 0] < 1.05 * w)
                      & (uv[c, ..., 1] > -0.05 * h) & (uv[c, ..., 1] < 1.05 * h))
            ok = V & front[c] & inside & np.isfinite(uv[c]).all(-1)
            kp = np.concatenate([uv[c] / self.scale[c], ok[..., None].astype(float)], -1)
            r = self.front.rois_from_keypoints(kp, min_conf=0.5)
            r[ok.sum(-1) < self.cfg.assoc_min_joints] = np.nan  # mostly outside the view: no crop
            rois.append(r)
        return rois, ids

    def step(self, t: int, images: list[np.ndarray | None]) -> None:
        """Process frame t (images: RGB uint8 per camera, None = missing)."""
        C = self.cams.num_cams
        cfg = self.cfg
        rois, ids = self._projected_rois(t, images)
        kps: list[list[np.ndarray]] = [[] for _ in range(C)]
        hints: list[list[int]] = [[] for _ in range(C)]
        found = np.zeros(len(ids), np.int64)
        found_rois: list[list[np.ndarray]] = [[] for _ in range(C)]
        for c in range(C):
            if images[c] is None or len(ids) == 0:
                continue
            ok = np.isfinite(rois[c]).all(1)
            if not ok.any():
                continue
            t0 = time.perf_counter()
            fk = self.front.keypoints(images[c], rois[c][ok])
            self.stats.keypoint_seconds += time.perf_counter() - t0
            self.stats.keypoint_people += int(ok.sum())
            for k, i in enumerate(np.flatnonzero(ok)):
                if fk.scores[k] >= cfg.min_pose_score:
                    kps[c].append(fk.coco17[k])
                    hints[c].append(int(ids[i]))
                    found_rois[c].append(rois[c][i])
                    found[i] += 1
        need = (t == 0 or len(ids) == 0 or self._lost or bool((found < cfg.min_views).any())
                or not cfg.roi_from_3d or (cfg.redetect_every > 0 and t % cfg.redetect_every == 0))
        if need:
            self.stats.detector_frames += 1
            for c in range(C):
                if images[c] is None:
                    continue
                tracked = np.array(kps[c]) if kps[c] else np.zeros((0, 17, 3))
                # Only people actually found through their ROI are skipped: a stale or wrong ROI must not hide
                # the person from the detector that is supposed to find them again.
                skip = np.array(found_rois[c]) if found_rois[c] else None
                new, _ = detect_people(self.front, images[c], cfg, oks_threshold=self.filter_cfg.oks_threshold,
                                       skip_rois=skip, stats=self.stats)
                for p in new:
                    if len(tracked) and (oks_np(p[None], tracked, conf=cfg.assoc_conf)
                                         > self.filter_cfg.oks_threshold).any():
                        continue  # the tracked person again: keep the tracked detection (and its identity)
                    kps[c].append(p)
                    hints[c].append(-1)
        D = max([len(k) for k in kps] + [1])
        kp = np.zeros((C, D, 17, 3))
        hint = -np.ones((C, D), np.int64)
        for c in range(C):
            if kps[c]:
                k = np.array(kps[c])
                k[..., :2] *= self.scale[c]  # video px -> calibration px
                kp[c, :len(k)] = k
                hint[c, :len(k)] = hints[c]
        t0 = time.perf_counter()
        fc = associate_frames(self.cams, kp[None], cfg, filter_cfg=self.filter_cfg, hints=hint[None])
        live_before = {k.id for k in self.tracker.live(t) if k.last == t - 1}
        slot_ids = self.tracker.update(t, fc.xyz[0], fc.valid[0], fc.n_views[0], fc.hints[0])
        swap_people(fc.keypoints[0], fc.labels[0], fc.xyz[0], fc.valid[0], self.tracker.last_flipped)
        self.stats.associate_seconds += time.perf_counter() - t0
        # A person tracked in the previous frame and not matched now: run the detector next frame.
        self._lost = bool(live_before - set(slot_ids.tolist()))
        self.records.append(_FrameRecord(fc.keypoints[0], fc.labels[0], slot_ids, fc.xyz[0], fc.valid[0]))
        self.stats.frames += 1

    def finish(self) -> Association:
        """Select the subjects and build the associated keypoint array over all processed frames."""
        F, C = len(self.records), self.cams.num_cams
        D = max([r.keypoints.shape[1] for r in self.records] + [1])
        S = max([r.slot_ids.shape[0] for r in self.records] + [1])
        kp = np.zeros((F, C, D, 17, 3))
        labels = -np.ones((F, C, D), np.int64)
        ids = -np.ones((F, S), np.int64)
        xyz = np.zeros((F, S, 17, 3))
        valid = np.zeros((F, S, 17), bool)
        for f, r in enumerate(self.records):
            d, s = r.keypoints.shape[1], r.slot_ids.shape[0]
            kp[f, :, :d] = r.keypoints
            labels[f, :, :d] = r.labels
            ids[f, :s] = r.slot_ids
            xyz[f, :s] = r.xyz
            valid[f, :s] = r.valid
        return finish_association(kp, labels, ids, xyz, valid, self.tracker, self.cfg)


# --------------------------------------------------------------------------------------------------------------
# Capture-level entry points
# --------------------------------------------------------------------------------------------------------------
def _split_config(config) -> tuple[DetectConfig, FilterConfig]:
    if isinstance(config, Config):
        return config.detect, config.filter
    if isinstance(config, DetectConfig):
        return config, FilterConfig()
    if config is None:
        return DetectConfig(), FilterConfig()
    raise TypeError(f"config must be a Config or DetectConfig, got {type(config).__name__}")


def _model_path(p: str, root: Path) -> Path:
    q = Path(p)
    return q if q.is_absolute() else root / q


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too: a model file replaced in place is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(capture, cfg: DetectConfig, filter_cfg: FilterConfig, *, root: Path = REPO,
                frames: tuple[int, int | None] = (0, None)) -> tuple[str, str]:
    """(sha256 hex, canonical JSON) of everything that determines ``detect_capture``'s output: the detection and
    filter settings (except threads/cache), the model files (content hash), the calibration, the media files
    (name and size) and the frame range."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_HASHED}
    models = {}
    for key in ("detector", "keypoint_model"):
        p = getattr(cfg, key)
        if p:
            path = _model_path(p, root)
            models[key] = _sha256(path) if path.is_file() else f"missing:{p}"
    cams = to_numpy(capture.cameras)
    calib = hashlib.sha256(b"".join(np.ascontiguousarray(np.asarray(a, np.float64)).tobytes()
                                    for a in (cams.K, cams.dist, cams.R, cams.t, cams.size))).hexdigest()
    media = {n: (Path(p).stat().st_size if Path(p).is_file() else sorted(q.name for q in Path(p).iterdir()))
             for n, p in sorted(capture.media.items())}
    blob = json.dumps({"detect": d, "filter": to_dict(filter_cfg), "models": models, "calibration": calib,
                       "cameras": list(cams.names), "media": media, "frames": list(frames), "version": 1},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest(), blob


def capture_directory(capture) -> Path:
    """The capture directory, from its media paths (videos/NAME.mp4 or images/NAME/)."""
    if not capture.media:
        raise CaptureError("the capture has no videos/ or images/ to detect people in")
    parents = {Path(p).absolute().parent.parent for p in capture.media.values()}
    if len(parents) != 1:
        raise CaptureError(f"media files of the capture lie in different directories: {sorted(map(str, parents))}")
    return parents.pop()


def run_detection(capture, config=None, *, progress: bool = True, frames: tuple[int, int | None] = (0, None),
                  front: PoseFrontEnd | None = None, root: Path = REPO, device: str = "auto") -> DetectionResult:
    """Detect and associate people in every frame of a capture's videos / image folders (no caching).

    ``frames`` = (start, stop) restricts the run (stop None = to the end). Returns keypoints in calibration px."""
    cfg, filter_cfg = _split_config(config)
    cams = to_numpy(capture.cameras)
    missing = [n for n in cams.names if n not in capture.media]
    if missing:
        raise CaptureError(f"no videos/ or images/ for cameras {missing} (cameras.toml has {list(cams.names)})")
    reader = MultiCameraReader({n: capture.media[n] for n in cams.names}, calibration_sizes=cams)
    fps = next((c.fps for c in reader.cameras if c.fps > 0), 0.0) or float(capture.fps or 0.0) or 30.0
    front = front or PoseFrontEnd.from_config(cfg, root=root, device=device)
    det = CaptureDetector(cams, front, cfg, filter_cfg, fps, to_calibration=reader.to_calibration)
    start, stop = frames
    stop = reader.num_frames if stop is None else min(stop, reader.num_frames)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max(stop - start, 0), unit="frame", desc="detect", dynamic_ncols=True)
    t_start = time.perf_counter()
    t_read = time.perf_counter()
    for t, images in reader.frames(start, stop):
        det.stats.decode_seconds += time.perf_counter() - t_read
        det.step(t - start, images)
        if bar is not None:
            live = len([k for k in det.tracker.tracks if k.alive and k.last == t - start])
            bar.set_postfix(people=live, det=det.stats.detector_frames, refresh=False)
            bar.update(1)
        t_read = time.perf_counter()
    det.stats.seconds = time.perf_counter() - t_start
    if bar is not None:
        bar.close()
    assoc = det.finish()
    return DetectionResult(keypoints=assoc.keypoints, association=assoc, stats=det.stats, fps=fps,
                           camera_names=tuple(cams.names))


def detect_capture(capture, config=None, progress: bool = True, *, directory: str | Path | None = None,
                   frames: tuple[int, int | None] = (0, None), root: Path = REPO,
                   device: str = "auto") -> Float[np.ndarray, "frames cams people 17 3"]:
    """Associated COCO-17 keypoints f32[frames, cams, people, 17, 3] (calibration px; people consistent across
    views and frames) of a capture with videos/ or images/, cached as ``keypoints2d.npz`` in the capture directory.

    A cached file is reused when ``config.detect.cache`` is on and its ``detect_config_hash`` matches
    (``config_hash``). A keypoints2d.npz that this function did not write (no hash field) is never overwritten.
    ``config``: a ``Config`` (uses .detect and .filter) or a ``DetectConfig``."""
    cfg, filter_cfg = _split_config(config)
    directory = Path(directory) if directory is not None else capture_directory(capture)
    path = directory / CACHE_FILE
    digest, blob = config_hash(capture, cfg, filter_cfg, root=root, frames=frames)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = str(z["detect_config_hash"]) if "detect_config_hash" in z.files else None
                if cfg.cache and stored == digest:
                    return np.asarray(z["keypoints"], np.float32)
        except (OSError, ValueError) as e:
            raise CaptureError(f"{path}: not a readable .npz file ({e})") from None
        if stored is None:
            raise CaptureError(f"{path}: exists and was not written by detect_capture (no 'detect_config_hash'); "
                               "remove it or move it away to run the detector")
    res = run_detection(capture, Config(detect=cfg, filter=filter_cfg), progress=progress, frames=frames,
                        root=root, device=device)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, keypoints=res.keypoints.astype(np.float32), joint_set=np.array("coco17"), associated=np.array(True),
        fps=np.array(float(res.fps)), camera_names=np.array(list(res.camera_names)),
        track_ids=res.association.track_ids, detect_config_hash=np.array(digest), detect_config=np.array(blob),
        detect_stats=np.array(json.dumps(res.stats.summary())),
    )
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache
    return res.keypoints


def _written_by_us(capture, directory) -> bool:
    path = (Path(directory) if directory is not None else capture_directory(capture)) / CACHE_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            return "detect_config_hash" in z.files
    except (OSError, ValueError):
        return False


def ensure_keypoints(capture, config=None, progress: bool = True, *, directory: str | Path | None = None,
                     frames: tuple[int, int | None] = (0, None), root: Path = REPO, device: str = "auto"):
    """The one call ``h4d fit`` makes before triangulation: a ``Capture`` with associated keypoints.

    - no keypoints, videos/ or images/ present -> ``detect_capture`` (cached keypoints2d.npz); a keypoints2d.npz
      that ``detect_capture`` wrote is checked against the current settings the same way (rerun if they changed);
    - keypoints with ``associated=False`` (e.g. OpenPose detections) -> ``associate_sequence`` on them (the people
      axis becomes consistent identities; extra joints beyond COCO-17 are carried along);
    - associated keypoints -> returned unchanged.
    """
    cfg, filter_cfg = _split_config(config)
    if capture.keypoints is not None and capture.media and _written_by_us(capture, directory):
        # keypoints2d.npz came from an earlier detect_capture: re-validate it against the current settings
        # (detect_capture reuses it when the hash matches and runs the front end again otherwise).
        capture = replace(capture, keypoints=None)
    if capture.keypoints is None:
        kp = detect_capture(capture, Config(detect=cfg, filter=filter_cfg), progress, directory=directory,
                            frames=frames, root=root, device=device)
        fps = capture.fps
        path = (Path(directory) if directory is not None else capture_directory(capture)) / CACHE_FILE
        with np.load(path, allow_pickle=False) as z:
            fps = float(z["fps"])
        return replace(capture, keypoints=kp, joint_set="coco17", associated=True, fps=fps)
    if not capture.associated:
        assoc = associate_sequence(capture.cameras, capture.keypoints, cfg, fps=capture.fps, filter_cfg=filter_cfg)
        return replace(capture, keypoints=assoc.keypoints, associated=True)
    return capture
