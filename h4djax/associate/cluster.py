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

__all__ = ["greedy_clusters", "orient_clusters", "assign_to_people"]


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


def _orient_one(A: np.ndarray, B: np.ndarray, max_exhaustive: int) -> np.ndarray:
    """Left/right orientation s (True = swap) of V detections minimizing sum_{i<j} (A_ij if s_i == s_j else B_ij)."""
    V = A.shape[0]
    iu = np.triu_indices(V, 1)
    if V <= max_exhaustive:
        combos = ((np.arange(2 ** (V - 1))[:, None] >> np.arange(V - 1)[None]) & 1).astype(bool)
        S = np.concatenate([np.zeros((len(combos), 1), bool), combos], 1)  # member 0 is the reference
        same = S[:, iu[0]] == S[:, iu[1]]
        total = np.where(same, A[iu], B[iu]).sum(1)
        s = S[int(np.argmin(total))]
    else:  # greedy: orient the member closest to the oriented set next
        s = np.zeros(V, bool)
        done = [0]
        todo = list(range(1, V))
        while todo:
            best = None
            for i in todo:
                keep = sum(A[i, j] if not s[j] else B[i, j] for j in done)
                swap = sum(B[i, j] if not s[j] else A[i, j] for j in done)
                cand = (min(keep, swap), i, swap < keep)
                best = cand if best is None or cand[0] < best[0] else best
            s[best[1]] = best[2]
            done.append(best[1])
            todo.remove(best[1])
    # Both global orientations cost the same: keep the detector's labels in the majority of views.
    return ~s if s.sum() * 2 > V else s


def orient_clusters(
    labels: Int[np.ndarray, "cams dets"],
    direct: Float[np.ndarray, "cams dets cams dets"],
    flipped: Float[np.ndarray, "cams dets cams dets"],
    *,
    max_exhaustive: int = 12,
) -> np.ndarray:
    """Which detections to swap left/right (b[cams, dets]) so that each cluster's views agree.

    Per cluster, the orientation of each member minimizing the summed pairwise ray costs (``direct`` where two
    members keep the same orientation, ``flipped`` otherwise; non-comparable pairs count 0): exhaustive up to
    ``max_exhaustive`` views (2^(V-1) assignments), greedy beyond. Of the two equivalent global orientations, the
    one that swaps fewer views wins, so identities keep the detector's labels where most views agree with it.
    """
    C, D = labels.shape
    out = np.zeros(C * D, bool)
    lab = labels.reshape(-1)
    A = np.asarray(direct, np.float64).reshape(C * D, C * D)
    B = np.asarray(flipped, np.float64).reshape(C * D, C * D)
    for k in np.unique(lab[lab >= 0]):
        m = np.flatnonzero(lab == k)
        if len(m) < 2:
            continue
        a, b = A[np.ix_(m, m)], B[np.ix_(m, m)]
        a, b = np.where(np.isfinite(a), a, 0.0), np.where(np.isfinite(b), b, 0.0)
        out[m] = _orient_one(a, b, max_exhaustive)
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
