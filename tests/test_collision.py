"""Tests of h4djax.collision: kernels vs an independent numpy reference, grids vs brute force and analytic SDFs,
the loss on meshes with known overlap, gradients vs finite differences, no recompilation, the sphere proxy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.collision import (
    CollisionMesh,
    CollisionSettings,
    build_sdf_grid_brute,
    collision_loss,
    collision_loss_cached,
    collision_loss_frames,
    init_grid_cache,
    pair_penetration,
    refresh_grids,
    fit_sphere_proxy,
    grid_frame,
    make_collision_fn,
    pair_depths,
    point_depth_exact,
    point_triangle_sqdist,
    pose_spheres,
    sample_sdf,
    solid_angle,
    sphere_depth,
    winding_numbers,
)
from h4djax.collision.sdf_np import (
    box_mesh_np,
    icosphere_np,
    point_triangles_distance_np,
    ray_hit_count_np,
    sdf_grid_np,
    winding_number_np,
)
from h4djax.collision.spheres import _build_rest_grid
from h4djax.config import CollisionConfig
from h4djax.errors import ConfigError


@pytest.fixture(scope="module", autouse=True)
def x64():
    """The whole module runs in float64 (exactness checks); compiled functions below are shared between tests so
    that the module compiles each program once (compilation dominates its run time on 2 cores)."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


BUILD = _build_rest_grid  # jax.jit(build_sdf_grid, static_argnames=("grid_size", "cube")), shared with the proxy fit
BRUTE = jax.jit(build_sdf_grid_brute, static_argnames=("grid_size", "cube"))
LOSS_VG = jax.jit(jax.value_and_grad(collision_loss))
EXACT = jax.jit(point_depth_exact)

ICO_V, ICO_F = icosphere_np(2)  # 162 vertices, 320 faces: the shape most tests share


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _ellipsoid():
    """A non-symmetric closed mesh: rotated, anisotropically scaled, shifted icosphere (ICO shapes)."""
    return (ICO_V * 0.7) @ _rotation(3).T * np.array([1.0, 1.4, 0.7]) + np.array([0.1, 0.0, -0.2]), ICO_F


# ------------------------------------------------------------------------------------------------ kernels


def test_point_triangle_distance_matches_numpy():
    rng = np.random.default_rng(0)
    tris = rng.normal(size=(300, 3, 3))
    tris[:20, 2] = tris[:20, 1]  # degenerate: repeated corner
    tris[20:30, 1] = tris[20:30, 0]
    tris[20:30, 2] = tris[20:30, 0]  # collapsed to a point
    tris[30:40, 2] = 0.5 * (tris[30:40, 0] + tris[30:40, 1])  # collinear
    pts = rng.normal(size=(40, 3)) * 1.5
    pts[0] = tris[50, 0]  # on a vertex
    pts[1] = tris[51].mean(0)  # on a face
    got = np.sqrt(np.asarray(point_triangle_sqdist(jnp.asarray(pts)[:, None], jnp.asarray(tris)[None])))
    want = np.stack([point_triangles_distance_np(p, tris) for p in pts])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_winding_number_matches_numpy_and_ray_parity():
    v, f = _ellipsoid()
    tris = v[f]
    pts = np.random.default_rng(2).uniform(-0.9, 0.9, size=(200, 3))
    w = np.asarray(winding_numbers(jnp.asarray(pts), jnp.asarray(tris), tri_chunk=64))
    w_np = np.array([winding_number_np(p, tris) for p in pts])
    np.testing.assert_allclose(w, w_np, atol=1e-9)
    # a closed mesh: 1 inside, 0 outside, and inside agrees with an independent ray-parity test
    assert np.all(np.minimum(np.abs(w), np.abs(w - 1)) < 1e-9)
    parity = np.array([ray_hit_count_np(p, tris, np.array([0.31, 0.77, -0.56])) % 2 for p in pts])
    np.testing.assert_array_equal(w > 0.5, parity == 1)
    assert 20 < parity.sum() < 180  # both classes present


def test_kernels_nan_safe_on_vertices_and_edges():
    tri = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for p in (tri[0], tri[1], 0.5 * (tri[0] + tri[1]), jnp.array([0.2, 0.2, 0.0])):
        val, g = jax.value_and_grad(lambda q: solid_angle(q, tri))(p)
        assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g)))
        _, g2 = jax.value_and_grad(lambda q: point_triangle_sqdist(q, tri))(p)
        assert np.all(np.isfinite(np.asarray(g2)))
    collapsed = jnp.zeros((3, 3))
    _, g3 = jax.value_and_grad(lambda q: point_triangle_sqdist(q, collapsed))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g3)))


# ------------------------------------------------------------------------------------------------ grids


def test_grid_matches_numpy_bruteforce():
    """Fast builder (ray parity + pruned distance) and brute force (winding numbers) vs the numpy twin of the
    reference CUDA kernel (Moller-Trumbore parity along a generic ray, barycentric distance)."""
    v, f = _ellipsoid()
    g = 12
    fast = BUILD(jnp.asarray(v), jnp.asarray(f), grid_size=g, padding=1.05, cube=False)
    brute = BRUTE(jnp.asarray(v), jnp.asarray(f), grid_size=g, padding=1.05, cube=False)
    ref = sdf_grid_np(v, f, np.asarray(fast.lo), np.asarray(fast.spacing), g)
    assert (ref > 0).sum() > 200
    np.testing.assert_allclose(np.asarray(fast.values), ref, atol=1e-12)
    np.testing.assert_allclose(np.asarray(brute.values), ref, atol=1e-12)


def _padded(v, f, nv=8, nf=12):
    """Pad a mesh to nv vertices (copies of vertex 0: bounding box unchanged) and nf faces (collapsed onto vertex 0:
    zero area, distance to a surface point), so that differently sized test meshes share one compiled program."""
    v = np.concatenate([v, np.repeat(v[:1], nv - len(v), axis=0)])
    f = np.concatenate([f, np.zeros((nf - len(f), 3), f.dtype)])
    return jnp.asarray(v), jnp.asarray(f)


def test_grid_watertight_on_edges_and_vertices():
    """Grid columns pass exactly through box edges, face diagonals and corners, and through every vertex of an
    octahedron (dyadic coordinates): the tie-breaking must count every crossing once, so the grids equal the
    analytic SDFs everywhere."""
    g = 17
    x = -1.5 + np.arange(g) * 3.0 / 16  # padding 1.5 on [-1, 1]: spacing 3/16, columns at 0 and +-0.75
    xx, yy, zz = np.meshgrid(x, x, x, indexing="ij")
    bv, bf = box_mesh_np([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])
    grid = BUILD(*_padded(bv, bf), grid_size=g, padding=1.5, cube=True)
    inside = (np.abs(xx) < 1) & (np.abs(yy) < 1) & (np.abs(zz) < 1)
    want = np.where(inside, 1 - np.maximum(np.maximum(np.abs(xx), np.abs(yy)), np.abs(zz)), 0.0)
    np.testing.assert_allclose(np.asarray(grid.values), want, atol=1e-12)
    ov = np.array([[0.75, 0, 0], [-0.75, 0, 0], [0, 0.75, 0], [0, -0.75, 0], [0, 0, 0.75], [0, 0, -0.75]])
    of = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    og = BUILD(*_padded(ov, of), grid_size=g, padding=2.0, cube=True)
    l1 = np.abs(xx) + np.abs(yy) + np.abs(zz)
    want = np.where(l1 < 0.75, (0.75 - l1) / np.sqrt(3.0), 0.0)
    np.testing.assert_allclose(np.asarray(og.values), want, atol=1e-12)


def test_sample_sdf_trilinear_and_outside_zero():
    from scipy.interpolate import RegularGridInterpolator

    from h4djax.collision import SdfGrid

    rng = np.random.default_rng(5)
    vals = rng.uniform(size=(6, 6, 6))
    lo, spacing = np.array([0.5, -1.0, 2.0]), np.array([0.2, 0.3, 0.1])
    grid = SdfGrid(values=jnp.asarray(vals), lo=jnp.asarray(lo), spacing=jnp.asarray(spacing))
    u = rng.uniform(0, 5, size=(50, 3))
    want = RegularGridInterpolator([np.arange(6.0)] * 3, vals)(u)
    np.testing.assert_allclose(np.asarray(sample_sdf(grid, jnp.asarray(lo + u * spacing))), want, atol=1e-12)
    outside = lo + np.array([[-0.01, 2, 2], [2, 5.01, 2], [2, 2, 7.0]]) * spacing
    np.testing.assert_array_equal(np.asarray(sample_sdf(grid, jnp.asarray(outside))), 0.0)


def test_grid_frame_cube_vs_box():
    v = jnp.asarray(np.array([[0, 0, 0], [2.0, 1.0, 0.5]]))
    lo, sp = grid_frame(v, 5, 1.2, True)
    np.testing.assert_allclose(np.asarray(lo), [1 - 1.2, 0.5 - 1.2, 0.25 - 1.2], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sp), [0.6] * 3, rtol=1e-12)
    lo, sp = grid_frame(v, 5, 1.2, False)
    np.testing.assert_allclose(np.asarray(sp), [0.6, 0.3, 0.15], rtol=1e-12)


# ------------------------------------------------------------------------------------------------ loss


def test_loss_known_overlap_boxes():
    """Big box A = [-1, 1]^3 and a small box B inside it near A's +x face. Each corner of B has the analytic depth
    1 - x in A (the face x = 1 is the closest, also at all grid points around it, so trilinear sampling is exact);
    A's corners are far outside B's grid."""
    va, f = box_mesh_np([-1, -1, -1], [1, 1, 1])
    vb, _ = box_mesh_np([0.5, 0.05, -0.25], [0.6, 0.15, -0.15])
    verts, fj = jnp.asarray(np.stack([va, vb])), jnp.asarray(f)
    depths_b = 1.0 - vb[:, 0]  # 4 corners at depth 0.5, 4 at 0.4
    loss, grad = LOSS_VG(verts, fj, CollisionSettings())
    np.testing.assert_allclose(float(loss), depths_b.sum() / 4, rtol=1e-12)  # (1 / P^2) sum of depths
    np.testing.assert_allclose(np.asarray(grad[1]), np.tile([-0.25, 0, 0], (8, 1)), atol=1e-12)  # d(1 - x)/4
    np.testing.assert_array_equal(np.asarray(grad[0]), 0.0)
    # Geman-McClure robustifier (traced: same compiled program): rho(x) = f / (f + 1), f = (x / s)^2
    fr = (depths_b / 0.3) ** 2
    loss_r, _ = LOSS_VG(verts, fj, CollisionSettings(robustifier=0.3))
    np.testing.assert_allclose(float(loss_r), np.sum(fr / (fr + 1)) / 4, rtol=1e-12)
    # vertex stride 2 samples corners 0, 2, 4, 6 and multiplies by 2 (keeps the loss scale)
    loss_s, _ = LOSS_VG(verts, fj, CollisionSettings(vertex_stride=2))
    np.testing.assert_allclose(float(loss_s), 2 * depths_b[::2].sum() / 4, rtol=1e-12)
    # swapping the people gives the same loss (symmetric formula)
    loss_sw, _ = LOSS_VG(verts[::-1], fj, CollisionSettings())
    np.testing.assert_allclose(float(loss_sw), float(loss), rtol=1e-12)


def test_loss_zero_when_separated_positive_when_overlapping():
    """Two spheres (icospheres of radius 0.5) at known centre distances."""
    v = ICO_V * 0.5
    fj = jnp.asarray(ICO_F)
    s = CollisionSettings()
    losses = {}
    # surfaces touch at distance 1.0. Grid spacing is 1.2 / 31 = 3.9 cm and trilinear sampling spreads inside
    # values by up to one cell, so "separated" means more than a cell diagonal (6.7 cm) apart.
    for gap in (1.2, 1.08, 0.9, 0.7, 0.5):
        verts = jnp.asarray(np.stack([v, v + np.array([gap, 0.0, 0.0])]))
        losses[gap] = float(LOSS_VG(verts, fj, s)[0])
    assert losses[1.2] == 0.0  # disjoint bounding boxes
    assert losses[1.08] == 0.0  # boxes overlap, surfaces 8 cm apart
    assert 0 < losses[0.9] < losses[0.7] < losses[0.5]
    # exact depth of B's vertices in A (grid-free) vs the analytic sphere depth 0.5 - |x - c_A|: equal up to the
    # polyhedral approximation (the sagitta of an ico2 face, < 1 cm at radius 0.5)
    verts = np.stack([v, v + np.array([0.7, 0.0, 0.0])])
    ex = np.asarray(EXACT(jnp.asarray(verts[0]), fj, jnp.asarray(verts[1])))
    analytic = np.maximum(0.5 - np.linalg.norm(verts[1], axis=1), 0)
    assert np.sum(ex > 0) > 20
    np.testing.assert_allclose(ex, analytic, atol=1e-2)
    assert np.all(ex <= analytic + 1e-12)  # the inscribed polyhedron is inside the sphere
    # the grid loss is within 10 % of the exact loss (both people penetrate symmetrically)
    exact_loss = 2 * ex.sum() / 4
    assert abs(losses[0.7] - exact_loss) < 0.1 * exact_loss


def test_gradient_matches_finite_differences():
    """d loss / d (penetrating vertices), float64, vs central differences. B is a small rotated sphere inside A
    near its surface, so A's vertices are outside B's grid and only B's vertices are penetrators."""
    va = ICO_V * 1.0
    vb = (ICO_V * 0.2) @ _rotation(7).T + np.array([0.55, 0.1, -0.05])
    verts = jnp.asarray(np.stack([va, vb]))
    fj = jnp.asarray(ICO_F)
    s = CollisionSettings(padding=1.3)
    loss, g = LOSS_VG(verts, fj, s)
    g = np.asarray(g)
    assert float(loss) > 0 and np.abs(g[1]).sum() > 0
    rng = np.random.default_rng(8)
    eps = 1e-6
    for n in rng.choice(len(vb), size=6, replace=False):
        for d in range(3):
            e = np.zeros(verts.shape)
            e[1, n, d] = eps
            fd = (float(LOSS_VG(verts + e, fj, s)[0]) - float(LOSS_VG(verts - e, fj, s)[0])) / (2 * eps)
            np.testing.assert_allclose(g[1, n, d], fd, rtol=1e-6, atol=1e-9)
    # the grid owner gets no gradient from its own grid (stop_gradient), and A's vertices are outside B's grid
    np.testing.assert_array_equal(g[0], 0.0)


def test_no_recompilation_on_new_data():
    fj = jnp.asarray(ICO_F)
    before = LOSS_VG._cache_size()
    rng = np.random.default_rng(9)
    for k in range(3):
        verts = jnp.asarray(np.stack([ICO_V * 0.5, ICO_V * 0.5 + rng.normal(size=3) * 0.1 + [0.6, 0, 0]]))
        settings = CollisionSettings(padding=1.2 + 0.1 * k, robustifier=0.05 * k)
        jax.block_until_ready(LOSS_VG(verts, fj, settings))
    assert LOSS_VG._cache_size() - before <= 1  # at most the first call compiles (none if another test did)


def test_frames_batched_masks_and_fit_adapter():
    """make_collision_fn (the fit's CollisionFn: people-major verts + frame mask -> mean over present frames) over
    collision_loss_frames in chunks of 2 frames (5 frames: padded last chunk) equals the per-frame loss; a third
    person far away only changes the 1 / P^2 normalization; an absent person (mask 0) is ignored even when its
    vertices overlap someone."""
    v = ICO_V * 0.5
    fj = jnp.asarray(ICO_F)
    offsets = np.random.default_rng(10).uniform(0.4, 1.1, size=5)
    two = np.stack([np.stack([v, v + [o, 0.05, 0]]) for o in offsets])  # [frames, people, verts, 3]
    s = CollisionSettings()
    want2 = np.array([float(LOSS_VG(jnp.asarray(two[t]), fj, s)[0]) for t in range(5)])
    assert np.sum(want2 > 0) >= 2
    far = np.concatenate([two, np.broadcast_to(v + [5.0, 0, 0], (5, 1) + v.shape)], axis=1)
    overlapping = np.concatenate([two, np.broadcast_to(v + [0.3, 0, 0], (5, 1) + v.shape)], axis=1)
    fn = jax.jit(jax.value_and_grad(make_collision_fn(fj, CollisionSettings(frame_chunk=2))))
    people_major = lambda x: jnp.asarray(np.swapaxes(x, 0, 1))  # noqa: E731
    ones = np.ones((3, 5))
    val, g = fn(people_major(far), jnp.asarray(ones))
    np.testing.assert_allclose(float(val), np.mean(want2) * 4 / 9, rtol=1e-10)
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and np.abs(g[:2]).sum() > 0
    np.testing.assert_array_equal(g[2], 0.0)
    g2 = np.stack([np.asarray(LOSS_VG(jnp.asarray(two[t]), fj, s)[1]) for t in range(5)], axis=1)
    np.testing.assert_allclose(g[:2], g2 * 4 / 9 / 5, rtol=1e-10, atol=1e-14)
    absent = ones.copy()
    absent[2] = 0
    val, g = fn(people_major(overlapping), jnp.asarray(absent))
    np.testing.assert_allclose(float(val), np.mean(want2), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(g)[2], 0.0)
    for t in range(5):  # one frame present at a time: the per-frame values of collision_loss_frames
        only = np.zeros((3, 5))
        only[:, t] = 1
        np.testing.assert_allclose(float(fn(people_major(far), jnp.asarray(only))[0]), want2[t] * 4 / 9,
                                   rtol=1e-10, atol=1e-14)


REFRESH = jax.jit(refresh_grids)  # settings (grid_tolerance included) traced: one program for every tolerance
PEN = jax.jit(pair_penetration)


def _sum_and_frames(fn):
    """value_and_grad of the summed per-frame losses, per-frame losses as aux (one program for both)."""
    def f(*a):
        per = fn(*a)
        return jnp.sum(per), per
    return f


CACHED_VG = jax.jit(jax.value_and_grad(_sum_and_frames(collision_loss_cached), argnums=1, has_aux=True))
FRESH_VG = jax.jit(jax.value_and_grad(_sum_and_frames(collision_loss_frames), has_aux=True))


def test_grid_cache_reuse_refresh_and_skip():
    """The fit's grid cache (refresh_grids + collision_loss_cached): with fresh grids it is the reference loss
    (value and gradient, absent people included); nothing is rebuilt when nothing moved; a move below the
    tolerance keeps the old grid, whose exact effect is the old configuration's penetration for that owner; a move
    above it rebuilds exactly that person-frame; a frame whose boxes do not overlap is never built; CollisionTerm's
    stateful `apply` on an empty cache (a fit stage's first iteration) is its stateless call (the reference)."""
    v = ICO_V * 0.5
    fj = jnp.asarray(ICO_F)
    offsets = [0.7, 1.5, 0.8, 0.6]  # frame 1: boxes 0.5 m apart
    verts = jnp.asarray(np.stack([np.stack([v, v + [o, 0.05, 0]]) for o in offsets]))  # [F, P, V, 3]
    valid = jnp.ones((4, 2), bool)
    s = CollisionSettings(grid_tolerance=0.005)
    cache = REFRESH(init_grid_cache(4, 2, len(v), s, verts.dtype), verts, fj, s, valid)
    assert int(cache.builds) == 6  # 3 overlapping frames x 2 people
    np.testing.assert_array_equal(np.asarray(cache.grids.values[1]), 0.0)  # never built
    ((val, _), g), ((want, _), g_want) = CACHED_VG(cache, verts, s, valid), FRESH_VG(verts, fj, s, valid)
    np.testing.assert_allclose(float(val), float(want), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_want), rtol=1e-10, atol=1e-14)
    again = REFRESH(cache, verts, fj, s, valid)
    assert int(again.builds) == 6
    np.testing.assert_array_equal(np.asarray(again.grids.values), np.asarray(cache.grids.values))

    # person 1 of frame 0 moves 2 mm (< 5 mm): its grid is kept. Person 0's grid is unchanged (it did not move),
    # so the cached frame-0 loss is (pen_new[0, 1] + pen_old[1, 0]) / P^2 exactly.
    shift = jnp.asarray([-0.002, 0.0, 0.0])  # towards person 0
    moved = verts.at[0, 1].add(shift)
    kept = REFRESH(cache, moved, fj, s, valid)
    assert int(kept.builds) == 6
    per = np.asarray(CACHED_VG(kept, moved, s, valid)[0][1])
    pen_old = np.asarray(PEN(verts[0], fj, s))
    pen_new = np.asarray(PEN(moved[0], fj, s))
    np.testing.assert_allclose(per[0], (pen_new[0, 1] + pen_old[1, 0]) / 4, rtol=1e-12)
    assert abs(pen_new[1, 0] - pen_old[1, 0]) > 1e-2  # the stale grid really differs from a fresh one
    np.testing.assert_allclose(per[2:], np.asarray(FRESH_VG(verts, fj, s, valid)[0][1])[2:], rtol=1e-12)

    # 1 cm (> 5 mm): exactly that person-frame is rebuilt, and the cached loss is the fresh one again
    moved = verts.at[0, 1].add(5 * shift)
    rebuilt = REFRESH(kept, moved, fj, s, valid)
    assert int(rebuilt.builds) == 7
    np.testing.assert_allclose(np.asarray(CACHED_VG(rebuilt, moved, s, valid)[0][1]),
                               np.asarray(FRESH_VG(moved, fj, s, valid)[0][1]), rtol=1e-12)
    # tolerance 0 (traced: same program): the 2 mm move is rebuilt (the reference); the separated frame, once its
    # people overlap, is built
    s0 = CollisionSettings(grid_tolerance=0.0)
    closer = moved.at[1, 1].add(jnp.asarray([-0.8, 0.0, 0.0]))
    ref = REFRESH(rebuilt, closer.at[0, 1].add(shift), fj, s0, valid)
    assert int(ref.builds) == 7 + 1 + 2
    assert REFRESH._cache_size() == 1

    # CollisionTerm (the fit's interface, people-major): apply on an empty cache == the reference, with person 1
    # absent in frame 3 (no grid built for either person there: nobody to overlap with)
    term = make_collision_fn(fj, s.replace(grid_refresh=2))
    assert term.stateful and not make_collision_fn(fj, CollisionSettings(method="spheres")).stateful
    mask = np.ones((2, 4))
    mask[1, 3] = 0
    pm, mask = jnp.swapaxes(verts, 0, 1), jnp.asarray(mask)
    apply_vg = jax.jit(jax.value_and_grad(lambda x, st: term.apply(st, x, mask), has_aux=True))
    (val, state), g = apply_vg(pm, term.init_state(2, 4, len(v), pm.dtype))
    ((_, per), g_want) = FRESH_VG(verts, fj, s, jnp.swapaxes(mask, 0, 1) > 0)
    np.testing.assert_allclose(float(val), float(np.mean(per)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g), np.swapaxes(np.asarray(g_want), 0, 1) / 4, rtol=1e-10, atol=1e-14)
    assert float(per[3]) == 0.0 and int(state.builds) == 4 and int(state.step) == 1
    # grid_refresh = 2: the 1 cm move is not looked at in call 2 (the stale grid is used), but in call 3
    far = pm.at[1, 0].add(5 * shift)
    (val2, state2), _ = apply_vg(far, state)
    assert int(state2.builds) == 4 and int(state2.step) == 2
    (val3, state3), _ = apply_vg(far, state2)
    assert int(state3.builds) == 5 and int(state3.step) == 3
    want3 = float(np.mean(np.asarray(FRESH_VG(jnp.swapaxes(far, 0, 1), fj, s, jnp.swapaxes(mask, 0, 1) > 0)[0][1])))
    np.testing.assert_allclose(float(val3), want3, rtol=1e-12)
    assert abs(float(val2) - want3) > 1e-3 * want3


def test_settings_from_config():
    s = CollisionSettings.from_config(CollisionConfig(grid_size=16, padding=1.3, method="spheres", grid_cube=False))
    assert s.grid_size == 16 and s.method == "spheres" and not s.cube and float(s.padding) == pytest.approx(1.3)
    with pytest.raises(ConfigError, match="collision.method"):
        CollisionSettings.from_config(CollisionConfig(method="mesh"))
    with pytest.raises(ConfigError, match="collision.builder"):
        CollisionSettings.from_config(CollisionConfig(builder="bvh"))
    s = CollisionSettings.from_config(CollisionConfig(grid_tolerance=0.02, grid_refresh=5))
    assert float(s.grid_tolerance) == 0.02 and s.grid_refresh == 5
    for bad in (dict(grid_tolerance=-0.01), dict(grid_refresh=0)):
        with pytest.raises(ConfigError, match="grid_tolerance >= 0, grid_refresh >= 1"):
            CollisionSettings.from_config(CollisionConfig(**bad))


# ------------------------------------------------------------------------------------------------ spheres


def test_sphere_proxy_lower_bound_and_rigid_invariance():
    v, f = _ellipsoid()
    proxy = fit_sphere_proxy(v, f, n_spheres=40, grid_size=12)  # same compiled grid build as the numpy test
    assert proxy.num_spheres > 5
    np.testing.assert_allclose(np.asarray(proxy.anchor_weights).sum(1), 1.0, atol=1e-5)
    rng = np.random.default_rng(11)
    pts = v[rng.integers(0, len(v), 300)] * rng.uniform(0.0, 1.1, size=(300, 1))  # many inside, some outside
    vj = jnp.asarray(v)
    c, r = pose_spheres(proxy, vj)
    est = np.asarray(sphere_depth(c, r, jnp.asarray(pts)))
    ex = np.asarray(EXACT(vj, jnp.asarray(f), jnp.asarray(pts[:162])))
    est_c = est[:162]
    assert np.all(est_c <= ex + 1e-5)  # inscribed balls: a lower bound (float32 proxy weights)
    deep = ex > 0.03
    assert deep.sum() > 30 and np.mean(est_c[deep] > 0) > 0.8
    # rigid motion of the mesh moves the balls exactly (affine anchors)
    rot, t = _rotation(12), np.array([0.3, -1.0, 2.0])
    c2, r2 = pose_spheres(proxy, jnp.asarray(v @ rot.T + t))
    est2 = np.asarray(sphere_depth(c2, r2, jnp.asarray(pts @ rot.T + t)))
    np.testing.assert_allclose(est2, est, atol=1e-5)


def test_sphere_method_loss_and_gradient():
    v = ICO_V * 0.5
    proxy = fit_sphere_proxy(v, ICO_F, n_spheres=16, grid_size=12)
    mesh = CollisionMesh(faces=jnp.asarray(ICO_F), spheres=proxy)
    s = CollisionSettings(method="spheres")
    far = jnp.asarray(np.stack([v, v + [1.2, 0, 0]]))
    near = jnp.asarray(np.stack([v, v + [0.7, 0, 0]]))
    assert float(LOSS_VG(far, mesh, s)[0]) == 0.0
    val, g = LOSS_VG(near, mesh, s)
    assert float(val) > 0 and np.all(np.isfinite(np.asarray(g)))
    # a lower bound of the grid-free exact loss (inscribed balls); with a 12^3 fitting grid the deepest grid point
    # is off-centre, so the big ball is ~1 cm too small and shallow penetrations are partly missed
    ex = EXACT(near[0], jnp.asarray(ICO_F), near[1])
    exact_loss = 2 * float(jnp.sum(ex)) / 4
    assert 0.4 * exact_loss < float(val) <= exact_loss
    assert pair_depths(near, mesh, s).shape == (2, 2, v.shape[0])
    # a body model (v_template + faces) is accepted directly, as the pipeline passes it
    from types import SimpleNamespace

    same = fit_sphere_proxy(SimpleNamespace(v_template=v, faces=ICO_F), n_spheres=16, grid_size=12)
    np.testing.assert_array_equal(np.asarray(same.radius), np.asarray(proxy.radius))
    np.testing.assert_array_equal(np.asarray(same.anchor_ids), np.asarray(proxy.anchor_ids))
