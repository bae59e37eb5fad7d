"""Tracking people over time by the 3D distance of their triangulated keypoints (host, numpy).

Each frame's people (clusters of detections, triangulated) are matched to the live tracks with a Hungarian
assignment on the mean 3D distance over the COCO-17 keypoints valid in both (the centroid distance when they share
fewer than 3), gated by ``max_dist + max_speed x elapsed time``: a person walking at 2 m/s moves 3 cm between two
frames at 60 fps, so the gate only widens for tracks that missed frames. The distance is also taken with the
person's left and right swapped: when that matches better (every view swapped sides since the last frame), the
person's detections are re-labelled, so a track's left arm stays its left arm. A cluster built from ROIs projected from
track k (its "hint") costs half as much to match to track k, so identities carried by the ROIs are kept unless the
3D disagrees. Unmatched people seen in >= ``min_views`` views start new tracks; a track unseen for more than
``max_missing`` frames ends (a person re-entering later gets a new ID: there is no appearance model). Two tracks whose
3D keypoints coincide (mean distance < ``merge_dist``) are the same person (e.g. both ROIs converged on one body):
the younger one ends.

``select_tracks`` then keeps the subjects: tracks with at least ``min_frames`` frames, ranked by persistence (the
number of (frame, view) observations), at most ``max_people`` of them. People seen by one camera only never form
a track, so background people (lab staff) become subjects only when consistently triangulated from >= 2 views and
among the ``max_people`` most persistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Bool, Float, Int
from scipy.optimize import linear_sum_assignment

from h4djax.associate.geometry import flip_lr

__all__ = ["Track", "Tracker", "pose_distance", "select_tracks"]

_BIG = 1e9


def pose_distance(
    xa: Float[np.ndarray, "a kpts 3"], va: Bool[np.ndarray, "a kpts"],
    xb: Float[np.ndarray, "b kpts 3"], vb: Bool[np.ndarray, "b kpts"],
) -> Float[np.ndarray, "a b"]:
    """Mean distance (m) over keypoints valid in both poses; centroid distance of each pose's valid keypoints
    when fewer than 3 are shared; inf when either pose has no valid keypoint."""
    xa, xb = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
    va, vb = np.asarray(va, bool), np.asarray(vb, bool)
    both = va[:, None] & vb[None]  # [a, b, k]
    d = np.sqrt(((xa[:, None] - xb[None]) ** 2).sum(-1))
    n = both.sum(-1)
    mean = np.where(both, d, 0.0).sum(-1) / np.maximum(n, 1)

    def centroid(x, v):
        c = (x * v[..., None]).sum(1) / np.maximum(v.sum(1), 1)[:, None]
        return np.where(v.any(1)[:, None], c, np.nan)

    cd = np.sqrt(((centroid(xa, va)[:, None] - centroid(xb, vb)[None]) ** 2).sum(-1))
    out = np.where(n >= 3, mean, cd)
    return np.where(np.isfinite(out), out, np.inf)


@dataclass
class Track:
    """One tracked person: id, last 3D keypoints f[kpts, 3] (m) and validity, frames of first/last observation,
    number of frames and of (frame, view) observations."""

    id: int
    xyz: np.ndarray
    valid: np.ndarray
    first: int
    last: int
    frames: int = 1
    view_frames: int = 0
    alive: bool = True
    history: list[int] = field(default_factory=list)


class Tracker:
    """Online tracker (see the module docstring). ``update`` once per frame, in frame order."""

    def __init__(self, *, fps: float, max_dist: float = 0.5, max_speed: float = 3.0, max_missing: int = 30,
                 min_views: int = 2, min_joints: int = 5, merge_dist: float = 0.1, hint_factor: float = 0.5):
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.max_dist, self.max_speed, self.max_missing = max_dist, max_speed, max_missing
        self.min_views, self.min_joints, self.merge_dist = min_views, min_joints, merge_dist
        self.hint_factor = hint_factor
        self.tracks: list[Track] = []
        self.last_flipped = np.zeros(0, bool)
        self._next = 0

    def live(self, t: int) -> list[Track]:
        """Tracks that may still be matched at frame t."""
        return [k for k in self.tracks if k.alive and t - k.last <= self.max_missing]

    def update(
        self,
        t: int,
        xyz: Float[np.ndarray, "people kpts 3"],
        valid: Bool[np.ndarray, "people kpts"],
        n_views: Int[np.ndarray, " people"],
        hints: Int[np.ndarray, " people"] | None = None,
    ) -> Int[np.ndarray, " people"]:
        """Match frame t's people to tracks; returns the track id of each person (-1: not tracked, i.e. seen in too
        few views or with too few valid keypoints to start a track). ``last_flipped`` b[people] then says which
        people matched their track with left and right swapped: the caller swaps their detections too."""
        xyz = np.array(xyz, np.float64).reshape(-1, np.shape(valid)[-1], 3)
        valid = np.array(valid, bool).reshape(xyz.shape[:2])
        n_views = np.asarray(n_views).reshape(-1)
        P = xyz.shape[0]
        hints = -np.ones(P, np.int64) if hints is None else np.asarray(hints).reshape(-1)
        for k in self.tracks:  # end tracks that missed too many frames
            if k.alive and t - k.last > self.max_missing:
                k.alive = False
        usable = (n_views >= self.min_views) & (valid.sum(1) >= self.min_joints)
        ids = -np.ones(P, np.int64)
        self.last_flipped = np.zeros(P, bool)
        live = [k for k in self.tracks if k.alive]
        if live and usable.any():
            tx, tv = np.stack([k.xyz for k in live]), np.stack([k.valid for k in live])
            direct = pose_distance(xyz, valid, tx, tv)
            # A person whose views all swapped left and right since the last frame matches flipped.
            swapped = pose_distance(flip_lr(xyz), flip_lr(valid[..., None])[..., 0], tx, tv)
            flip = swapped < direct
            cost = np.minimum(direct, swapped)
            gap = np.array([t - k.last for k in live], np.float64)
            gate = self.max_dist + self.max_speed * np.maximum(gap - 1.0, 0.0) / self.fps
            same_hint = hints[:, None] == np.array([k.id for k in live])[None]
            cost = np.where(same_hint, cost * self.hint_factor, cost)
            ok = (cost <= gate[None]) & usable[:, None]
            if ok.any():
                rows, cols = linear_sum_assignment(np.where(ok, cost, _BIG))
                for r, c in zip(rows, cols):
                    if ok[r, c]:
                        ids[r] = live[c].id
                        if flip[r, c]:
                            self.last_flipped[r] = True
                            xyz[r], valid[r] = flip_lr(xyz[r]), flip_lr(valid[r][:, None])[:, 0]
                        self._observe(live[c], t, xyz[r], valid[r], int(n_views[r]))
        for r in np.flatnonzero(usable & (ids < 0)):
            k = Track(id=self._next, xyz=xyz[r].copy(), valid=valid[r].copy(), first=t, last=t, frames=1,
                      view_frames=int(n_views[r]), history=[t])
            self._next += 1
            self.tracks.append(k)
            ids[r] = k.id
        self._merge_duplicates(t, ids)
        return ids

    def _observe(self, k: Track, t: int, x, v, n_views: int) -> None:
        # Keep the last known position of joints that are invalid this frame (gives the next frame a full pose to
        # match and to project ROIs from).
        k.xyz = np.where(v[:, None], x, k.xyz)
        k.valid = k.valid | v
        k.last = t
        k.frames += 1
        k.view_frames += n_views
        k.history.append(t)

    def _merge_duplicates(self, t: int, ids: np.ndarray) -> None:
        now = [k for k in self.tracks if k.alive and k.last == t]
        if len(now) < 2:
            return
        d = pose_distance(np.stack([k.xyz for k in now]), np.stack([k.valid for k in now]),
                          np.stack([k.xyz for k in now]), np.stack([k.valid for k in now]))
        for i in range(len(now)):
            for j in range(i + 1, len(now)):
                a, b = now[i], now[j]
                if a.alive and b.alive and d[i, j] < self.merge_dist:
                    young = b if (b.first, b.id) > (a.first, a.id) else a
                    young.alive = False
                    ids[ids == young.id] = -1

    def state(self, ids: Int[np.ndarray, " n"]) -> tuple[np.ndarray, np.ndarray]:
        """Last 3D keypoints f[n, kpts, 3] and validity b[n, kpts] of the given track ids."""
        by = {k.id: k for k in self.tracks}
        return (np.stack([by[i].xyz for i in ids]) if len(ids) else np.zeros((0, 17, 3)),
                np.stack([by[i].valid for i in ids]) if len(ids) else np.zeros((0, 17), bool))


def select_tracks(tracks: list[Track], *, max_people: int = 0, min_frames: int = 1) -> list[int]:
    """Ids of the subjects: tracks with >= ``min_frames`` frames, most (frame, view) observations first (ties: the
    earlier track), at most ``max_people`` (0 = all); returned in order of first appearance (then id)."""
    cand = [k for k in tracks if k.frames >= min_frames]
    cand.sort(key=lambda k: (-k.view_frames, k.first, k.id))
    if max_people > 0:
        cand = cand[:max_people]
    cand.sort(key=lambda k: (k.first, k.id))
    return [k.id for k in cand]
