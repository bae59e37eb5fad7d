"""Multi-view clustering of one frame's detections: at most one detection per view per person (host, numpy).

Two steps, as in the multi-view matching literature (Dong et al. CVPR 2019: pairwise geometric affinities, then a
clustering that keeps each cluster to one detection per view):

1. ``greedy_clusters``: agglomerative, greedy on the pairwise ray costs. Edges (two detections in different views
   with cost <= ``max_cost``) are visited cheapest first; an edge joins its two clusters if they share no view,
   the mean cost over all cross pairs of the two clusters (average linkage) is <= ``max_cost`` and no cross pair is
   above ``2 max_cost`` (or non-comparable while the other pairs are). Detections with known, different track
   hints (ROIs projected from two different tracked people) never share a cluster; detections with the same hint
   have their cost scaled by ``hint_factor`` so that they are visited first. Deterministic: ties are broken by
   (view, detection) order.
2. ``assign_to_people`` (after triangulating the clusters): per view, a Hungarian assignment
   (``scipy.optimize.linear_sum_assignment``) of the view's detections to the triangulated people on
   ``1 - OKS(projection, detection)``, accepted when OKS >= ``min_oks``. This removes views that disagree with the
   3D estimate of their cluster and recovers detections that step 1 left out (a view whose affinity to the other
   views was noisy but whose detection matches the projected person).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int
from scipy.optimize import linear_sum_assignment

__all__ = ["greedy_clusters", "assign_to_people"]


def greedy_clusters(
    cost: Float[np.ndarray, "cams dets cams dets"],
    present: np.ndarray,
    max_cost: float,
    *,
    hints: Int[np.ndarray, "cams dets"] | None = None,
    hint_factor: float = 0.5,
) -> Int[np.ndarray, "cams dets"]:
    """Cluster labels (0..K-1, -1 = absent detection) of every detection; singletons are clusters too.

    Args:
        cost: pairwise costs (``pairwise_ray_costs``), inf = not comparable / same view.
        present: b[cams, dets] which detection slots hold a detection.
        max_cost: average-linkage threshold (metres for ray costs).
        hints: i[cams, dets] track id that produced each detection (-1 = detector / unknown).
        hint_factor: cost multiplier for two detections carrying the same hint (< 1: prefer them).
    Labels are renumbered so that clusters with more views come first (ties: first member's (view, detection)).
    """
    C, D = present.shape
    N = C * D
    cost = np.asarray(cost, np.float64).reshape(N, N).copy()
    pres = np.asarray(present, bool).reshape(N)
    view = np.repeat(np.arange(C), D)
    if hints is not None:
        h = np.asarray(hints).reshape(N)
        known = h >= 0
        same = known[:, None] & known[None, :] & (h[:, None] == h[None, :])
        diff = known[:, None] & known[None, :] & (h[:, None] != h[None, :])
        cost = np.where(same, cost * hint_factor, cost)
        cost = np.where(diff, np.inf, cost)
    cost[~pres, :] = np.inf
    cost[:, ~pres] = np.inf
    ii, jj = np.nonzero(np.triu(cost <= max_cost, 1))
    order = np.lexsort((jj, ii, cost[ii, jj]))  # cheapest first, ties by node order
    label = np.arange(N)
    members = {i: [i] for i in range(N) if pres[i]}
    views = {i: {int(view[i])} for i in range(N) if pres[i]}
    for e in order:
        a, b = label[ii[e]], label[jj[e]]
        if a == b or views[a] & views[b]:
            continue
        block = cost[np.ix_(members[a], members[b])]
        finite = np.isfinite(block)
        if not finite.any() or block[finite].mean() > max_cost or block[finite].max() > 2.0 * max_cost:
            continue
        # A non-comparable pair (no shared keypoints, or different hints) vetoes the merge only through the
        # hint rule (inf there on purpose): occlusion can leave two views of one person without common joints.
        if hints is not None and np.isinf(block).any():
            hb = np.asarray(hints).reshape(N)
            ha_set = {int(hb[m]) for m in members[a] if hb[m] >= 0}
            hb_set = {int(hb[m]) for m in members[b] if hb[m] >= 0}
            if ha_set and hb_set and ha_set != hb_set:
                continue
        keep, drop = (a, b) if a < b else (b, a)
        members[keep] += members.pop(drop)
        views[keep] |= views.pop(drop)
        label[members[keep]] = keep
    roots = sorted(members, key=lambda r: (-len(members[r]), min(members[r])))
    out = -np.ones(N, np.int64)
    for k, r in enumerate(roots):
        out[members[r]] = k
    return out.reshape(C, D)


def assign_to_people(
    oks: Float[np.ndarray, "cams people dets"],
    min_oks: float,
    *,
    bonus: Float[np.ndarray, "cams people dets"] | None = None,
) -> Int[np.ndarray, "cams dets"]:
    """Per view, the Hungarian assignment of detections to people maximizing the OKS between each person's
    projection and the detection (plus an optional ``bonus``, e.g. for keeping the detection a cluster was built
    from); pairs with OKS < ``min_oks`` are never assigned. Returns i[cams, dets] person index or -1."""
    oks = np.asarray(oks, np.float64)
    C, P, D = oks.shape
    out = -np.ones((C, D), np.int64)
    if P == 0 or D == 0:
        return out
    score = oks + (0.0 if bonus is None else np.asarray(bonus, np.float64))
    for c in range(C):  # one small assignment problem per view (people x detections)
        ok = np.isfinite(oks[c]) & (oks[c] >= min_oks)
        if not ok.any():
            continue
        s = np.where(ok, score[c], -1e3)
        rows, cols = linear_sum_assignment(-s)
        good = ok[rows, cols]
        out[c, cols[good]] = rows[good]
    return out
