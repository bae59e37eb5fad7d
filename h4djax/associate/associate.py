"""Identity for unassociated 2D detections: cross-view association per frame + tracking over time.

    clusters = associate_frames(cams, kp, cfg)             # kp f[frames, cams, dets, kpts, 3], unordered per view
    result = associate_sequence(cams, kp, cfg, fps=60.0)   # result.keypoints f[frames, cams, people, kpts, 3]

Per frame (``associate_frames``, batched over frames where it can be):

1. 2D filtering of every view with the project's filter (``h4djax.triangulate.filter_with_config``: too few
   keypoints, OKS duplicates; PIPELINE.md 1.2).
2. Pairwise ray-to-ray costs between the detections of different views (``geometry.pairwise_ray_costs``, metres;
   left/right-swapped detections forgiven) and greedy multi-view clustering, one detection per view per cluster
   (``cluster.greedy_clusters``); within each cluster, views whose left and right are swapped relative to the
   others are re-labelled (``cluster.orient_clusters``).
3. Clusters seen in >= ``min_views`` views are triangulated (``geometry.triangulate_np``: a host DLT with one
   round of outlier removal, vectorized over frames, people and joints), projected into every view, and each
   view's detections are re-assigned to the projected people by a Hungarian assignment on OKS
   (``cluster.assign_to_people``); clusters left with fewer than ``min_views`` views are dissolved, the rest
   triangulated again. The pipeline's robust triangulation (``h4djax.triangulate``) runs later, on the
   associated keypoints; a jitted program here would recompile for every new number of people.

Over time (``associate_sequence``): ``track.Tracker`` matches each frame's people to tracks by 3D keypoint
distance, and ``track.select_tracks`` keeps the ``max_people`` most persistent multi-view tracks.

Host-side (numpy + scipy) except the 2D filter (JAX, detections axis padded to a power of two >= 8 so that it
compiles once for a capture). The settings are the
association fields of ``h4djax.config.DetectConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float, Int

from h4djax.associate.cluster import assign_to_people, greedy_clusters, orient_clusters
from h4djax.associate.geometry import (
    NUM_BODY, flip_lr, oks_np, pairwise_ray_costs, ray_directions, triangulate_np,
)
from h4djax.associate.track import Tracker, select_tracks
from h4djax.config import DetectConfig, FilterConfig
from h4djax.errors import CaptureError
from h4djax.geometry.cameras import Cameras, to_numpy
from h4djax.geometry.cameras_np import project_np

__all__ = ["FrameClusters", "Association", "associate_frames", "associate_sequence", "finish_association",
           "gather_people", "triangulate_people", "make_tracker", "swap_people"]

#: Score added to a detection's OKS for the cluster it was built in, so that the re-assignment only moves a
#: detection when another person's projection fits it clearly better.
_KEEP_BONUS = 0.05


@dataclass(frozen=True)
class FrameClusters:
    """People of each frame, before tracking.

    labels:  i[frames, cams, dets]   person slot of each detection (-1: not associated).
    xyz:     f[frames, slots, 17, 3] triangulated COCO-17 keypoints (m, 0 where invalid).
    valid:   b[frames, slots, 17]
    n_views: i[frames, slots]        views in the person's cluster (0 = empty slot).
    hints:   i[frames, slots]        track id most of the person's detections came from (-1: none).
    keypoints: f[frames, cams, dets, kpts, 3] the filtered detections (dropped poses have confidence 0), with
               left and right swapped where that makes a detection agree with its person (``swapped``).
    swapped:   b[frames, cams, dets] detections whose left/right labels were swapped.
    """

    labels: np.ndarray
    xyz: np.ndarray
    valid: np.ndarray
    n_views: np.ndarray
    hints: np.ndarray
    keypoints: np.ndarray
    swapped: np.ndarray


@dataclass(frozen=True)
class Association:
    """Associated keypoints with identities consistent across views and frames.

    keypoints: f32[frames, cams, people, kpts, 3] (FORMATS.md, associated=True; conf 0 where the person has no
               associated detection in that view).
    track_ids: i[people] tracker ids of the kept people (people axis order: first appearance).
    n_views:   i[frames, people] views associated per frame.
    xyz:       f[frames, people, 17, 3], valid: b[frames, people, 17]: the association's triangulation (m).
    num_tracks: tracks started in total (kept or not); dropped: ids of tracks not kept.
    """

    keypoints: np.ndarray
    track_ids: np.ndarray
    n_views: np.ndarray
    xyz: np.ndarray
    valid: np.ndarray
    num_tracks: int
    dropped: tuple[int, ...]


def _pad_size(n: int, minimum: int = 2) -> int:
    """Next power of two >= n (shapes crossing jit take few distinct values: few compilations)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


def gather_people(
    keypoints: Float[np.ndarray, "frames cams dets kpts 3"], labels: Int[np.ndarray, "frames cams dets"], slots: int
) -> Float[np.ndarray, "frames cams slots kpts 3"]:
    """Scatter each associated detection into its person slot (conf 0 elsewhere)."""
    F, C, D, K, _ = keypoints.shape
    out = np.zeros((F, C, slots, K, 3), keypoints.dtype)
    f, c, d = np.nonzero(labels >= 0)
    out[f, c, labels[f, c, d]] = keypoints[f, c, d]
    return out


def triangulate_people(
    cams: Cameras, people: Float[np.ndarray, "frames cams slots kpts 3"], cfg: DetectConfig
) -> tuple[Float[np.ndarray, "frames slots 17 3"], Bool[np.ndarray, "frames slots 17"]]:
    """Host triangulation (``geometry.triangulate_np``) of the COCO-17 keypoints of every person slot."""
    kp = np.moveaxis(np.asarray(people, np.float64)[..., :NUM_BODY, :], 1, 0)  # [cams, frames, slots, 17, 3]
    xyz, valid, _ = triangulate_np(cams, kp, conf=cfg.assoc_conf)
    return xyz, valid


def _filter(keypoints: np.ndarray, filter_cfg: FilterConfig) -> np.ndarray:
    from h4djax.triangulate import filter_with_config

    F, C, D, K, _ = keypoints.shape
    if D == 0:
        return keypoints
    Dp = _pad_size(D, 8)  # pad the detections axis: one compilation for every D up to Dp
    kp = np.zeros((F, C, Dp, K, 3), np.float32)
    kp[:, :, :D] = keypoints
    out = np.asarray(filter_with_config(kp, filter_cfg).keypoints, np.float64)[:, :, :D]
    return out


def associate_frames(
    cams: Cameras,
    keypoints: Float[np.ndarray, "frames cams dets kpts 3"],
    cfg: DetectConfig | None = None,
    *,
    filter_cfg: FilterConfig | None = None,
    hints: Int[np.ndarray, "frames cams dets"] | None = None,
) -> FrameClusters:
    """Cross-view association of every frame independently (module docstring, steps 1-3).

    Args:
        cams: the rig (cams axis = keypoints' cams axis).
        keypoints: f[frames, cams, dets, kpts, 3] detections per view in any order (conf 0 = empty slot); the
            first 17 keypoints are COCO-17.
        cfg: association settings (``DetectConfig``: assoc_conf, assoc_min_joints, assoc_max_dist, min_views,
            reproj_min_oks).
        hints: i[frames, cams, dets] track that produced each detection (ROIs from a projected 3D estimate), or -1.
    """
    cfg = cfg or DetectConfig()
    filter_cfg = filter_cfg or FilterConfig()
    cams = to_numpy(cams)
    kp = np.asarray(keypoints, np.float64)
    if kp.ndim != 5 or kp.shape[-1] != 3 or kp.shape[3] < NUM_BODY:
        raise CaptureError(f"keypoints must be [frames, cams, dets, kpts>=17, 3], got {list(kp.shape)}")
    if kp.shape[1] != cams.num_cams:
        raise CaptureError(f"keypoints have {kp.shape[1]} cameras, the calibration has {cams.num_cams} "
                           f"({list(cams.names)})")
    F, C, D, K, _ = kp.shape
    hints = -np.ones((F, C, D), np.int64) if hints is None else np.asarray(hints, np.int64).reshape(F, C, D)
    kp = _filter(kp, filter_cfg)
    present = (kp[..., :NUM_BODY, 2] > cfg.assoc_conf).sum(-1) >= cfg.assoc_min_joints  # [F, C, D]

    # --- step 2: greedy clustering on ray costs (combinatorial, per frame) -----------------------------------
    labels0 = -np.ones((F, C, D), np.int64)
    flip0 = np.zeros((F, C, D), bool)
    ok = (kp[..., :NUM_BODY, 2] > cfg.assoc_conf) & np.isfinite(kp[..., :NUM_BODY, :]).all(-1)
    uv = np.where(ok[..., None], np.nan_to_num(kp[..., :NUM_BODY, :2]), 0.0)
    dirs = np.moveaxis(ray_directions(cams, np.moveaxis(uv, 1, 0)), 0, 1)  # [F, C, D, 17, 3], one undistortion
    for f in range(F):
        if not present[f].any():
            continue
        rc = pairwise_ray_costs(cams, kp[f], conf=cfg.assoc_conf, min_joints=cfg.assoc_min_joints,
                                directions=dirs[f])
        lab = greedy_clusters(rc.cost, present[f], cfg.assoc_max_dist, hints=hints[f])
        flip0[f] = orient_clusters(lab, rc.direct, rc.flipped)
        # Keep clusters with enough views; relabel 0..n-1 (greedy_clusters sorts them by size).
        sizes = np.bincount(lab[lab >= 0], minlength=1)
        good = np.flatnonzero(sizes >= cfg.min_views)
        remap = -np.ones(max(len(sizes), 1), np.int64)
        remap[good] = np.arange(len(good))
        labels0[f] = np.where(lab >= 0, remap[np.maximum(lab, 0)], -1)
    slots = _pad_size(int(labels0.max()) + 1 if (labels0 >= 0).any() else 0)

    # --- step 3: triangulate, re-assign each view's detections to the projected people, triangulate again -----
    kp_flip = flip_lr(kp)
    xyz, valid = triangulate_people(cams, gather_people(np.where(flip0[..., None, None], kp_flip, kp), labels0,
                                                        slots), cfg)
    uv, front = project_np(cams, xyz)  # [C, F, S, 17, 2]
    uv = np.moveaxis(uv, 0, 1)  # [F, C, S, 17, 2]
    proj = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)  # as keypoints with confidence 1
    pvalid = valid[:, None] & np.moveaxis(front, 0, 1)  # [F, C, S, 17]
    oks_direct, oks_swapped = (
        oks_np(proj[:, :, :, None], k[:, :, None, :, :NUM_BODY], conf=cfg.assoc_conf,
               valid_a=pvalid[:, :, :, None], valid_b=None) for k in (kp, kp_flip))  # [F, C, S, D] each
    swap = oks_swapped > oks_direct  # the detection fits the person better with left and right swapped
    oks = np.maximum(oks_direct, oks_swapped)
    has_people = (valid.sum(-1) >= cfg.assoc_min_joints)  # [F, S]
    oks = np.where(has_people[:, None, :, None] & present[:, :, None, :], oks, -np.inf)
    labels = -np.ones((F, C, D), np.int64)
    for f in range(F):
        if not has_people[f].any():
            continue
        bonus = np.where(labels0[f][:, None, :] == np.arange(slots)[None, :, None], _KEEP_BONUS, 0.0)
        labels[f] = assign_to_people(oks[f], cfg.reproj_min_oks, bonus=bonus)
    n_views = np.zeros((F, slots), np.int64)
    for s in range(slots):
        n_views[:, s] = (labels == s).sum((1, 2))
    dissolve = n_views < cfg.min_views  # [F, S]
    drop = np.take_along_axis(dissolve, np.maximum(labels, 0).reshape(F, -1), 1).reshape(labels.shape)
    labels = np.where((labels >= 0) & ~drop, labels, -1)
    n_views = np.where(dissolve, 0, n_views)
    swapped = (labels >= 0) & np.take_along_axis(swap, np.maximum(labels, 0)[:, :, None], 2)[:, :, 0]
    kp = np.where(swapped[..., None, None], kp_flip, kp)  # detections re-labelled to agree with their person
    xyz, valid = triangulate_people(cams, gather_people(kp, labels, slots), cfg)
    valid &= (n_views >= cfg.min_views)[..., None]
    # Majority hint of each person.
    person_hint = -np.ones((F, slots), np.int64)
    for f, s in zip(*np.nonzero(n_views > 0)):
        h = hints[f][labels[f] == s]
        h = h[h >= 0]
        if h.size:
            vals, counts = np.unique(h, return_counts=True)
            person_hint[f, s] = vals[np.argmax(counts)]
    return FrameClusters(labels=labels, xyz=xyz, valid=valid, n_views=n_views, hints=person_hint, keypoints=kp,
                         swapped=swapped)


def make_tracker(cfg: DetectConfig, fps: float) -> Tracker:
    """A ``Tracker`` with the tracking settings of ``cfg``."""
    return Tracker(fps=fps, max_dist=cfg.track_max_dist, max_speed=cfg.track_max_speed,
                   max_missing=cfg.track_max_missing, min_views=cfg.min_views, min_joints=cfg.assoc_min_joints,
                   merge_dist=cfg.track_merge_dist)


def associate_sequence(
    cams: Cameras,
    keypoints: Float[np.ndarray, "frames cams dets kpts 3"],
    cfg: DetectConfig | None = None,
    *,
    fps: float = 30.0,
    filter_cfg: FilterConfig | None = None,
) -> Association:
    """Associate unassociated detections across views (per frame) and over time (tracking), then keep the
    subjects (``cfg.max_people`` most persistent tracks with >= ``cfg.min_track_frames`` frames).

    Returns an ``Association`` whose ``keypoints`` f32[frames, cams, people, kpts, 3] have one consistent person
    per index (people ordered by first appearance)."""
    cfg = cfg or DetectConfig()
    fc = associate_frames(cams, keypoints, cfg, filter_cfg=filter_cfg)
    tracker = make_tracker(cfg, fps)
    F = fc.labels.shape[0]
    ids = -np.ones(fc.n_views.shape, np.int64)  # [F, S] track id of each person slot
    for f in range(F):  # tracking is sequential by nature
        ids[f] = tracker.update(f, fc.xyz[f], fc.valid[f], fc.n_views[f], fc.hints[f])
        swap_people(fc.keypoints[f], fc.labels[f], fc.xyz[f], fc.valid[f], tracker.last_flipped)
    return finish_association(fc.keypoints, fc.labels, ids, fc.xyz, fc.valid, tracker, cfg)


def swap_people(
    keypoints: Float[np.ndarray, "cams dets kpts 3"],
    labels: Int[np.ndarray, "cams dets"],
    xyz: Float[np.ndarray, "slots 17 3"],
    valid: Bool[np.ndarray, "slots 17"],
    which: Bool[np.ndarray, " slots"],
) -> None:
    """In place: swap left and right of the people ``which`` (their detections and 3D keypoints), as decided by
    ``Tracker.update`` (``last_flipped``) to keep each track's sides consistent over time."""
    for s in np.flatnonzero(which):
        m = labels == s
        keypoints[m] = flip_lr(keypoints[m])
        xyz[s] = flip_lr(xyz[s])
        valid[s] = flip_lr(valid[s][:, None])[:, 0]


def finish_association(
    keypoints: Float[np.ndarray, "frames cams dets kpts 3"],
    labels: Int[np.ndarray, "frames cams dets"],
    slot_ids: Int[np.ndarray, "frames slots"],
    xyz: Float[np.ndarray, "frames slots 17 3"],
    valid: Bool[np.ndarray, "frames slots 17"],
    tracker: Tracker,
    cfg: DetectConfig,
) -> Association:
    """Select the subjects among the tracker's tracks and write their detections on a people axis."""
    keep = select_tracks(tracker.tracks, max_people=cfg.max_people, min_frames=cfg.min_track_frames)
    F, C, D, K, _ = keypoints.shape
    P = len(keep)
    out = np.zeros((F, C, P, K, 3), np.float32)
    n_views = np.zeros((F, P), np.int64)
    X = np.zeros((F, P, NUM_BODY, 3))
    V = np.zeros((F, P, NUM_BODY), bool)
    for p, tid in enumerate(keep):
        f_idx, s_idx = np.nonzero(slot_ids == tid)
        X[f_idx, p] = xyz[f_idx, s_idx]
        V[f_idx, p] = valid[f_idx, s_idx]
        for f, s in zip(f_idx, s_idx):
            c, d = np.nonzero(labels[f] == s)
            out[f, c, p] = keypoints[f, c, d]
            n_views[f, p] = len(c)
    dropped = tuple(k.id for k in tracker.tracks if k.id not in keep)
    return Association(keypoints=out, track_ids=np.asarray(keep, np.int64), n_views=n_views, xyz=X, valid=V,
                       num_tracks=len(tracker.tracks), dropped=dropped)
