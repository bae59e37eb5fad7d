"""Cross-view association and tracking (h4djax.associate) on synthetic rigs with known identities.

Ground truth: people are 17-keypoint skeletons moving on known paths, projected into a random calibrated rig with
distortion; each view's detections are shuffled, noised, and mixed with spurious detections (a person in one view
only, random skeletons, a background person seen by two cameras for a short time). The tests check the grouping
against the known identities, ID stability over time, entering/leaving people, and the geometric helpers against
independent computations (least squares, brute force, the JAX OKS of h4djax.triangulate).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from h4djax.associate import (
    Tracker, assign_to_people, associate_frames, associate_sequence, flip_lr, greedy_clusters, oks_np,
    pairwise_ray_costs, pose_distance, ray_directions, select_tracks,
)
from h4djax.associate.geometry import triangulate_np
from h4djax.config import DetectConfig
from h4djax.geometry import from_numpy, to_numpy
from h4djax.geometry.cameras_np import camera_centers_np, project_np

# A standing person, COCO-17 order, metres, z up (feet at z ~ 0.08).
TEMPLATE = np.array([
    [0.0, 0.08, 1.70], [0.035, 0.1, 1.74], [-0.035, 0.1, 1.74], [0.08, 0.04, 1.72], [-0.08, 0.04, 1.72],
    [0.19, 0.0, 1.46], [-0.19, 0.0, 1.46], [0.24, 0.02, 1.18], [-0.24, 0.02, 1.18], [0.27, 0.06, 0.93],
    [-0.27, 0.06, 0.93], [0.11, 0.0, 0.96], [-0.11, 0.0, 0.96], [0.12, 0.02, 0.52], [-0.12, 0.02, 0.52],
    [0.12, -0.02, 0.08], [-0.12, -0.02, 0.08],
])


def look_at(centre, target):
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, -1.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ centre


def make_rig(n_cams=6, seed=0):
    rng = np.random.default_rng(seed)
    K, R, t, dist = [], [], [], []
    for i in range(n_cams):
        a = 2 * np.pi * i / n_cams + rng.uniform(-0.25, 0.25)
        r = rng.uniform(4.5, 6.0)
        c = np.array([r * np.cos(a), r * np.sin(a), rng.uniform(1.2, 2.5)])
        Ri, ti = look_at(c, np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), 1.0]))
        f = rng.uniform(1100, 1500)
        K.append([[f, 0, 960 + rng.uniform(-20, 20)], [0, f, 540 + rng.uniform(-20, 20)], [0, 0, 1]])
        R.append(Ri)
        t.append(ti)
        dist.append([rng.uniform(-0.1, 0.05), rng.uniform(-0.02, 0.02), 1e-4, -1e-4, 0.0])
    return to_numpy(from_numpy(np.array(K), np.array(dist), np.array(R), np.array(t),
                               np.array([[1920, 1080]] * n_cams), names=[f"c{i}" for i in range(n_cams)]))


def person(centre, yaw, rng=None, scale=1.0):
    c, s = np.cos(yaw), np.sin(yaw)
    Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    X = (TEMPLATE * scale) @ Rz.T + np.array([centre[0], centre[1], 0.0])
    if rng is not None:
        X = X + rng.normal(0, 0.01, X.shape)
    return X


def observe(cams, X, rng, noise_px=1.5, conf=0.9):
    """Detections f[cams, n, 17, 3] of world skeletons X [n, 17, 3]: projected, noised, in-image only."""
    uv, front = project_np(cams, X)
    uv = uv + rng.normal(0, noise_px, uv.shape)
    size = np.asarray(cams.size)[:, None, None, :]
    inside = front & (uv >= 0).all(-1) & (uv < size).all(-1)
    c = np.where(inside, conf, 0.0)
    return np.concatenate([np.where(inside[..., None], uv, 0.0), c[..., None]], -1)


def shuffle_views(kp, rng, extra=0):
    """Shuffle the people of every view, padding with `extra` empty slots; returns keypoints and truth [C, D]."""
    C, P = kp.shape[:2]
    D = P + extra
    out = np.zeros((C, D) + kp.shape[2:])
    truth = -np.ones((C, D), np.int64)
    for c in range(C):
        perm = rng.permutation(D)[:P]
        out[c, perm] = kp[c]
        truth[c, perm] = np.where(kp[c, :, :, 2].max(-1) > 0, np.arange(P), -1)
    return out, truth


def same_partition(labels, truth):
    """Every true person maps to exactly one label and vice versa (labels up to renaming); -1 = unassociated."""
    pairs = {(int(a), int(b)) for a, b in zip(labels.ravel(), truth.ravel()) if b >= 0 or a >= 0}
    by_truth, by_label = {}, {}
    for a, b in pairs:
        by_truth.setdefault(b, set()).add(a)
        by_label.setdefault(a, set()).add(b)
    return (all(len(v) == 1 and -1 not in v for k, v in by_truth.items() if k >= 0)
            and all(len(v) == 1 for k, v in by_label.items() if k >= 0))


@pytest.fixture(scope="module")
def rig():
    return make_rig()


# ---------------------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------------------
def test_ray_directions_point_at_the_world_point(rig):
    X = np.random.default_rng(1).uniform([-1, -1, 0.2], [1, 1, 1.8], (20, 3))
    uv, _ = project_np(rig, X)
    d = ray_directions(rig, uv)  # [C, 20, 3]
    o = camera_centers_np(rig)
    want = X[None] - o[:, None]
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    np.testing.assert_allclose(d, want, atol=1e-7)  # ~1e-4 px: the numpy undistortion's Newton tolerance


def test_undistort_normalized_matches_the_geometry_module(rig):
    from h4djax.geometry.cameras_np import undistort_points_np

    from h4djax.associate.geometry import undistort_normalized

    X = np.random.default_rng(11).uniform([-1, -1, 0.2], [1, 1, 1.8], (50, 3))
    fish = rig.replace(fisheye=np.array([True, False] * 3),
                       dist=np.where(np.array([True, False] * 3)[:, None],
                                     np.array([0.05, -0.01, 0.002, -0.0005, 0, 0, 0, 0]), rig.dist))
    for cams in (rig, fish):
        uv, _ = project_np(cams, X)
        Xc = np.einsum("cij,nj->cni", cams.R, X) + cams.t[:, None]
        exact = Xc[..., :2] / Xc[..., 2:]
        np.testing.assert_allclose(undistort_normalized(cams, uv), exact, atol=1e-10)
        np.testing.assert_allclose(undistort_normalized(cams, uv), undistort_points_np(cams, uv), atol=1e-7)


def test_ray_costs_match_least_squares_closest_approach(rig):
    rng = np.random.default_rng(2)
    kp = np.zeros((rig.num_cams, 1, 17, 3))
    kp[..., :2] = rng.uniform([200, 100], [1700, 1000], (rig.num_cams, 1, 17, 2))
    kp[..., 2] = 1.0
    rc = pairwise_ray_costs(rig, kp, min_joints=1, cap=1e9, min_depth=-1e9)
    cost, n = rc.direct, rc.shared
    d = ray_directions(rig, kp[:, 0, :, :2])
    o = camera_centers_np(rig)
    for a, b in [(0, 1), (2, 5), (3, 4)]:
        dists = []
        for j in range(17):  # min over s, u of |o_a + s d_a - o_b - u d_b| by least squares
            A = np.stack([d[a, j], -d[b, j]], 1)
            su, *_ = np.linalg.lstsq(A, o[b] - o[a], rcond=None)
            dists.append(np.linalg.norm(o[a] + su[0] * d[a, j] - o[b] - su[1] * d[b, j]))
        assert cost[a, 0, b, 0] == pytest.approx(np.mean(dists), rel=1e-7)
        assert cost[a, 0, b, 0] == cost[b, 0, a, 0]
        assert n[a, 0, b, 0] == 17
    assert np.isinf(cost[np.arange(rig.num_cams), 0, np.arange(rig.num_cams), 0]).all()


def test_ray_costs_separate_people(rig):
    rng = np.random.default_rng(3)
    X = np.stack([person((0.0, 0.0), 0.3, rng), person((0.8, 0.2), 1.0, rng)])
    kp = observe(rig, X, rng, noise_px=0.0)
    cost = pairwise_ray_costs(rig, kp).direct
    pairs = list(itertools.permutations(range(rig.num_cams), 2))
    same = np.array([cost[a, p, b, p] for a, b in pairs for p in range(2)])
    diff = np.array([cost[a, 0, b, 1] for a, b in pairs])
    assert np.isfinite(same).all() and same.max() < 1e-6
    # Two views alone are often ambiguous: with cameras at about the people's height, rays of a joint from any two
    # views nearly meet somewhere (the epipolar constraint is then weak). Here half the cross-person pairs are
    # below 0.1 m, none below 0.03 m, while noise-free same-person pairs are at 0: clusters are therefore built
    # cheapest-first over all views and checked by triangulation (test_greedy_clusters_*, test_associate_frames_*).
    assert np.median(diff[np.isfinite(diff)]) > 0.05 and diff.min() > 0.03


def test_ray_costs_veto_rays_meeting_behind_a_camera():
    # Two cameras facing each other along x. A point behind camera b has a pixel in b (from x/z with z < 0) whose
    # ray meets a's ray exactly, but behind b: the cheirality test charges `cap`.
    Ra, ta = look_at(np.array([-5.0, 0, 1.0]), np.array([0.0, 0, 1.0]))
    Rb, tb = look_at(np.array([5.0, 0, 1.0]), np.array([0.0, 0, 1.0]))
    cams = to_numpy(from_numpy(np.array([[[1000, 0, 960], [0, 1000, 540], [0, 0, 1]]] * 2), None,
                               np.stack([Ra, Rb]), np.stack([ta, tb]), np.array([[1920, 1080]] * 2)))
    X = np.array([0.3, 0.2, 1.1]) + np.random.default_rng(0).uniform(-0.3, 0.3, (17, 3))
    behind = X + np.array([7.0, 0, 0])  # beyond camera b
    kp = np.ones((2, 2, 17, 3))
    for c, R, t in ((0, Ra, ta), (1, Rb, tb)):
        for i, P in enumerate((X, behind)):
            Xc = P @ R.T + t
            kp[c, i, :, :2] = Xc[:, :2] / Xc[:, 2:3] * 1000 + np.array([960, 540])
    cost = pairwise_ray_costs(cams, kp, cap=1.0).direct
    assert cost[0, 0, 1, 0] < 1e-9  # the real point
    assert cost[0, 1, 1, 1] == pytest.approx(1.0)  # rays meet behind camera b
    assert pairwise_ray_costs(cams, kp, min_depth=-np.inf).direct[0, 1, 1, 1] < 1e-9


def test_left_right_swaps_are_forgiven_and_reoriented(rig):
    from h4djax.associate import orient_clusters

    rng = np.random.default_rng(12)
    X = person((0.1, 0.2), 0.7, rng)[None]
    kp = observe(rig, X, rng, noise_px=1.0)  # [C, 1, 17, 3]
    swapped_views = [1, 4]
    kp[swapped_views] = flip_lr(kp[swapped_views])
    rc = pairwise_ray_costs(rig, kp)
    assert rc.direct[0, 0, 1, 0] > 0.05 and rc.flipped[0, 0, 1, 0] < 0.02 and rc.cost[0, 0, 1, 0] < 0.02
    assert rc.direct[1, 0, 4, 0] < 0.02  # two swapped views agree with each other
    labels = np.zeros((rig.num_cams, 1), np.int64)
    flips = orient_clusters(labels, rc.direct, rc.flipped)
    assert np.flatnonzero(flips[:, 0]).tolist() == swapped_views  # the minority is re-labelled
    # Whole frames: the association re-labels the swapped views, the triangulation is then exact.
    fc = associate_frames(rig, kp[None], DetectConfig())
    assert np.flatnonzero(fc.swapped[0, :, 0]).tolist() == swapped_views
    s = fc.labels[0, 0, 0]
    np.testing.assert_allclose(fc.xyz[0, s], X[0], atol=0.01)
    np.testing.assert_allclose(fc.keypoints[0, swapped_views, 0], flip_lr(kp[swapped_views, 0]))


def test_triangulate_np_exact_and_rejects_one_outlier_view(rig):
    rng = np.random.default_rng(4)
    X = person((0.2, -0.1), 0.5, rng)
    kp = observe(rig, X[None], rng, noise_px=0.0)[:, 0]  # [C, 17, 3]
    xyz, valid, err = triangulate_np(rig, kp)
    assert valid.all()
    np.testing.assert_allclose(xyz, X, atol=1e-6)
    bad = kp.copy()
    bad[2, :, :2] += 80.0  # one view off by 80 px on every joint
    xyz2, valid2, err2 = triangulate_np(rig, bad)
    assert valid2.all() and np.abs(xyz2 - X).max() < 1e-6
    assert np.isinf(err2[2]).all()  # the outlier view was removed from every joint's solve
    single = kp.copy()
    single[1:, :, 2] = 0.0
    assert not triangulate_np(rig, single)[1].any()  # one view: nothing is valid


def test_oks_np_matches_the_jax_filter_oks():
    import jax
    import jax.numpy as jnp

    from h4djax.triangulate import oks_matrix

    rng = np.random.default_rng(5)
    kp = np.concatenate([rng.uniform(0, 500, (4, 17, 2)), rng.uniform(0, 1, (4, 17, 1))], -1)
    kp[1, :, :2] = kp[0, :, :2] + rng.normal(0, 8, (17, 2))
    kp[3, :, 2] = 0.0  # nothing valid: 0.1
    want = np.asarray(jax.jit(oks_matrix)(jnp.asarray(kp), jnp.asarray(0.2)))
    got = oks_np(kp[:, None], kp[None], conf=0.2)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert got[0, 1] > 0.7 and got[0, 2] < 0.3 and got[0, 3] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------------------------
def test_greedy_clusters_group_shuffled_people_and_leave_spurious_alone(rig):
    rng = np.random.default_rng(6)
    X = np.stack([person((-0.7, 0.0), 0.0, rng), person((0.6, 0.3), 2.0, rng), person((0.0, -0.9), 4.0, rng)])
    kp = observe(rig, X, rng)
    kp, truth = shuffle_views(kp, rng, extra=1)
    # The free slot of each view holds a random skeleton at a random place (a spurious detection).
    C, D = truth.shape
    for c in range(C):
        j = np.flatnonzero(truth[c] < 0)[0]
        kp[c, j, :, :2] = rng.uniform(100, 900) + rng.uniform(-80, 80, (17, 2)) * [1, 3]
        kp[c, j, :, 2] = 0.8
    cost = pairwise_ray_costs(rig, kp).cost
    present = kp[..., 2].max(-1) > 0
    labels = greedy_clusters(cost, present, 0.15)
    sizes = np.bincount(labels[labels >= 0])
    multi = np.flatnonzero(sizes >= 2)
    assert len(multi) == 3
    real = np.where(np.isin(labels, multi), labels, -1)
    assert same_partition(real, truth)
    assert (sizes[multi] >= C - 1).all()  # a person is (nearly) always seen by every camera here
    # At most one detection per view in every cluster.
    for k in range(labels.max() + 1):
        assert np.bincount(np.nonzero(labels == k)[0], minlength=C).max() <= 1


def test_greedy_clusters_respect_hints(rig):
    rng = np.random.default_rng(7)
    X = np.stack([person((0.0, 0.0), 0.0, rng), person((0.05, 0.02), 0.1, rng)])  # two bodies almost coincide
    kp = observe(rig, X, rng, noise_px=0.5)
    cost = pairwise_ray_costs(rig, kp).cost
    hints = np.tile(np.array([7, 9]), (rig.num_cams, 1))
    labels = greedy_clusters(cost, np.ones((rig.num_cams, 2), bool), 0.15, hints=hints)
    # Detections from different tracks never share a cluster; each track's detections form one cluster.
    assert same_partition(labels, np.tile(np.arange(2), (rig.num_cams, 1)))


def test_assign_to_people_is_the_optimal_assignment():
    rng = np.random.default_rng(8)
    for _ in range(20):
        P, D = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        oks = rng.uniform(0, 1, (1, P, D))
        got = assign_to_people(oks, 0.3)[0]
        best, best_score = None, -1.0
        for perm in itertools.permutations(list(range(D)) + [-1] * P, P):  # person p -> detection perm[p] or none
            if len({x for x in perm if x >= 0}) != sum(x >= 0 for x in perm):
                continue
            if any(x >= 0 and oks[0, p, x] < 0.3 for p, x in enumerate(perm)):
                continue
            score = sum(oks[0, p, x] for p, x in enumerate(perm) if x >= 0)
            if score > best_score + 1e-12:
                best, best_score = perm, score
        got_score = sum(oks[0, got[d], d] for d in range(D) if got[d] >= 0)
        assert got_score == pytest.approx(best_score)
        assert all(oks[0, got[d], d] >= 0.3 for d in range(D) if got[d] >= 0)


def test_associate_frames_batch(rig):
    rng = np.random.default_rng(9)
    F = 3
    kps, truths = [], []
    for f in range(F):
        X = np.stack([person((-0.6 + 0.05 * f, 0.0), 0.0, rng), person((0.6, 0.1 * f), 1.5, rng)])
        k, tr = shuffle_views(observe(rig, X, rng), rng, extra=1)
        c = f % rig.num_cams  # a person seen by one camera only (e.g. lab staff close to that camera)
        j = np.flatnonzero(tr[c] < 0)[0]
        k[c, j] = observe(rig.select([c]), person((4.0, 0.0), 0.0, rng)[None], rng)[0, 0]
        k[c, j, :, :2] = np.clip(k[c, j, :, :2], 0, 1000)
        k[c, j, :, 2] = 0.9
        kps.append(k)
        truths.append(tr)
    fc = associate_frames(rig, np.stack(kps), DetectConfig())
    for f in range(F):
        assert same_partition(fc.labels[f], truths[f])
        assert sorted(fc.n_views[f][fc.n_views[f] > 0].tolist()) == [rig.num_cams, rig.num_cams]
        s = np.flatnonzero(fc.n_views[f] > 0)
        assert fc.valid[f, s].all()


# ---------------------------------------------------------------------------------------------------------------
# tracking
# ---------------------------------------------------------------------------------------------------------------
def test_pose_distance_mean_and_centroid_fallback():
    a = np.zeros((1, 17, 3))
    b = np.ones((1, 17, 3)) * [0.3, 0.4, 0.0]
    v = np.ones((1, 17), bool)
    assert pose_distance(a, v, b, v)[0, 0] == pytest.approx(0.5)
    va = np.zeros((1, 17), bool)
    va[0, :2] = True
    vb = np.zeros((1, 17), bool)
    vb[0, 5:9] = True
    assert pose_distance(a, va, b, vb)[0, 0] == pytest.approx(0.5)  # no shared joints: centroids
    assert np.isinf(pose_distance(a, np.zeros((1, 17), bool), b, v)[0, 0])


def test_tracker_gate_new_tracks_expiry_and_merge():
    tr = Tracker(fps=10.0, max_dist=0.3, max_speed=2.0, max_missing=3, merge_dist=0.1)
    v = np.ones((2, 17), bool)
    X = np.stack([person((0, 0), 0), person((2, 0), 0)])
    assert tr.update(0, X, v, np.array([3, 3])).tolist() == [0, 1]
    # Swapped order in the next frame, small motion: identities follow the 3D, not the order.
    X1 = X[::-1] + 0.05
    assert tr.update(1, X1, v, np.array([3, 2])).tolist() == [1, 0]
    # A person seen in one view only does not start a track.
    assert tr.update(2, X1[:1] + 5.0, v[:1], np.array([1])).tolist() == [-1]
    # Track 0 unseen for 2 frames: gate = 0.3 + 2 m/s x 2 frames / 10 fps = 0.7 m, so a 0.6 m jump still matches.
    X4 = X1[1:] + np.array([0.6, 0, 0])
    assert tr.update(4, X4, v[:1], np.array([2])).tolist() == [0]
    # Beyond max_missing frames a track is over; the same place then starts a new id.
    assert tr.update(9, X1[:1], v[:1], np.array([2])).tolist() == [2]
    # Two people at the same place: duplicates, the younger track ends.
    ids = tr.update(10, np.stack([X1[0], X1[0] + 0.01]), v, np.array([2, 2]))
    assert sorted(ids.tolist()) == [-1, 2]
    assert [k.id for k in tr.tracks if k.alive] == [2]


def test_tracker_keeps_sides_when_a_whole_person_comes_swapped():
    tr = Tracker(fps=30.0)
    v = np.ones((1, 17), bool)
    X = person((0, 0), 0.3)[None]
    tr.update(0, X, v, np.array([4]))
    assert not tr.last_flipped.any()
    ids = tr.update(1, flip_lr(X + 0.01), v, np.array([4]))
    assert ids.tolist() == [0] and tr.last_flipped.tolist() == [True]
    np.testing.assert_allclose(tr.tracks[0].xyz, X[0] + 0.01)  # stored with the track's own sides


def test_select_tracks_by_persistence():
    tr = Tracker(fps=30.0)
    v = np.ones((3, 17), bool)
    for t in range(20):
        X = np.stack([person((0, 0), 0), person((2, 0), 0), person((-2, 0), 0)])
        n = np.array([4, 2, 3]) if t < 12 else np.array([4, 0, 3])
        tr.update(t, X, v, n)
    by = {k.id: k for k in tr.tracks}
    assert by[0].view_frames == 80 and by[1].view_frames == 24 and by[2].view_frames == 60
    assert select_tracks(tr.tracks, max_people=2) == [0, 2]
    assert select_tracks(tr.tracks, max_people=0, min_frames=13) == [0, 2]
    assert select_tracks(tr.tracks, max_people=0) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------------------------
# whole sequences
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sequence(rig):
    """40 frames at 30 fps: A and B walk past each other (paths 0.35 m apart at the crossing), C enters at frame
    12 and leaves after frame 29, a background person is seen by two cameras during frames 5-9 only, and every
    view has a spurious random skeleton. Returns (detections, truth [F, C, D], fps)."""
    rng = np.random.default_rng(10)
    F, C = 40, rig.num_cams
    kps, truths = [], []
    for f in range(F):
        s = f / (F - 1)
        people = [person((-1.0 + 2.0 * s, 0.175), 0.0, rng), person((1.0 - 2.0 * s, -0.175), np.pi, rng)]
        if 12 <= f < 30:
            people.append(person((0.0, 1.2 - 0.02 * (f - 12)), 1.0, rng))
        k = observe(rig, np.stack(people), rng)
        k, tr = shuffle_views(k, rng, extra=2 + (3 - len(people)))
        for c in range(C):
            j = np.flatnonzero(tr[c] < 0)[0]
            k[c, j, :, :2] = rng.uniform(50, 1000) + rng.uniform(-60, 60, (17, 2)) * [1, 3]
            k[c, j, :, 2] = 0.7
        if 5 <= f < 10:  # background person near the wall, seen by cameras 0 and 1
            bg = observe(rig.select([0, 1]), person((3.0, 3.0), 2.0, rng)[None], rng)[:, 0]
            for i, c in enumerate((0, 1)):
                j = np.flatnonzero(tr[c] < 0)[-1]
                if bg[i, :, 2].max() > 0:
                    k[c, j] = bg[i]
                    tr[c, j] = 3
        if f > 0:  # the keypoint model swaps left and right in about one detection in five
            swap = rng.uniform(size=tr.shape) < 0.2
            k[swap] = flip_lr(k[swap])
            tr = np.where(swap & (tr >= 0), tr + 100, tr)  # remembered as id + 100
        kps.append(k)
        truths.append(tr)
    return np.stack(kps), np.stack(truths), 30.0


def _identity_map(out_kp, det_kp, truth):
    """For each output person, the set of true ids of the detections placed on it, matched by exact keypoints.
    Truth ids >= 100 mark detections given with left and right swapped: the output must hold them swapped back."""
    F, C, P = out_kp.shape[:3]
    seen = {p: set() for p in range(P)}
    frames = {p: set() for p in range(P)}
    for f in range(F):
        for c in range(C):
            for p in range(P):
                k = out_kp[f, c, p]
                if k[:, 2].max() == 0:
                    continue
                d = np.abs(det_kp[f, c, :, :17, :2] - k[None, :17, :2]).max((1, 2))
                d_swap = np.abs(flip_lr(det_kp[f, c, :, :17])[..., :2] - k[None, :17, :2]).max((1, 2))
                j = int(np.argmin(np.minimum(d, d_swap)))
                assert min(d[j], d_swap[j]) < 1e-3  # output keypoints are input detections (maybe re-labelled)
                true = int(truth[f, c, j])
                if true >= 100:  # given swapped: must come out swapped back
                    assert d_swap[j] < 1e-3, (f, c, p)
                    true -= 100
                elif true >= 0:
                    assert d[j] < 1e-3, (f, c, p)
                seen[p].add(true)
                frames[p].add(f)
    return seen, frames


def test_sequence_stable_ids_entering_leaving_and_background(rig, sequence):
    kp, truth, fps = sequence
    res = associate_sequence(rig, kp, DetectConfig(max_people=0, min_track_frames=10), fps=fps)
    assert res.keypoints.shape[:3] == (kp.shape[0], rig.num_cams, 3)
    seen, frames = _identity_map(res.keypoints, kp, truth)
    # Three subjects, each output person is exactly one true person in every frame and view (no ID switch).
    assert sorted(next(iter(s)) for s in seen.values()) == [0, 1, 2]
    assert all(len(s) == 1 for s in seen.values())
    p_c = [p for p, s in seen.items() if s == {2}][0]
    assert frames[p_c] == set(range(12, 30))  # entering and leaving
    for p, s in seen.items():
        if s != {2}:
            assert frames[p] == set(range(40))
            assert (res.n_views[:, p] >= rig.num_cams - 1).all()
    # The background person (2 views, 5 frames) and spurious detections are not subjects.
    assert 3 not in set().union(*seen.values())
    # People axis ordered by first appearance: A, B (frame 0) then C.
    assert p_c == 2
    # max_people keeps the most persistent: A and B.
    res2 = associate_sequence(rig, kp, DetectConfig(max_people=2), fps=fps)
    seen2, _ = _identity_map(res2.keypoints, kp, truth)
    assert sorted(next(iter(s)) for s in seen2.values()) == [0, 1]


def test_sequence_with_a_view_missing_and_more_joints(rig, sequence):
    """Keypoints beyond COCO-17 are carried along; a camera without detections for some frames is fine."""
    kp, truth, fps = sequence
    kp = kp[:15].copy()
    truth = truth[:15]
    kp[3:8, 2] = 0.0  # camera 2 sees nothing in frames 3-7
    extra = np.concatenate([kp, kp[..., :8, :]], axis=3)  # 25 keypoints per detection
    res = associate_sequence(rig, extra, DetectConfig(max_people=0), fps=fps)
    assert res.keypoints.shape[3] == 25
    seen, frames = _identity_map(res.keypoints[..., :17, :], kp, truth)
    assert sorted(next(iter(s)) for s in seen.values()) == [0, 1] and all(len(s) == 1 for s in seen.values())
    # All 25 keypoints of each detection were carried along; re-labelled detections were swapped with
    # flip_permutation(25), which also exchanges BODY_25B's feet (19-21 <-> 22-24).
    for f, c, p in zip(*np.nonzero(res.keypoints[..., 2].max(-1) > 0)):
        out = res.keypoints[f, c, p]
        cands = [extra[f, c, j] for j in range(extra.shape[2])] + [flip_lr(extra[f, c, j])
                                                                  for j in range(extra.shape[2])]
        assert min(np.abs(out - x).max() for x in cands) < 1e-4
    assert (res.keypoints[3:8, 2, :, :, 2] == 0).all()
    assert (res.n_views[3:8] == rig.num_cams - 1).all()
