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
    build_sdf_grid,
    build_sdf_grid_brute,
    collision_loss,
    collision_loss_frames,
    fit_sphere_proxy,
    grid_frame,
    pair_depths,
    pair_penetration,
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
from h4djax.config import CollisionConfig
from h4djax.errors import ConfigError


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


# ------------------------------------------------------------------------------------------------ kernels


def test_point_triangle_distance_matches_numpy(x64):
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


def test_winding_number_matches_numpy_and_ray_parity(x64):
    v, f = icosphere_np(2, 0.8, (0.1, -0.2, 0.05))
    v = v @ _rotation(1).T * np.array([1.0, 0.6, 1.3])  # non-symmetric closed mesh
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


def test_solid_angle_nan_safe_on_vertex():
    tri = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for p in (tri[0], tri[1], 0.5 * (tri[0] + tri[1]), jnp.array([0.2, 0.2, 0.0])):
        val, g = jax.value_and_grad(lambda q: solid_angle(q, tri))(p)
        assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g)))
        _, g2 = jax.value_and_grad(lambda q: point_triangle_sqdist(q, tri))(p)
        assert np.all(np.isfinite(np.asarray(g2)))


# ------------------------------------------------------------------------------------------------ grids


@pytest.mark.parametrize("mesh", ["ico", "box"])
def test_grid_matches_numpy_bruteforce(x64, mesh):
    if mesh == "ico":
        v, f = icosphere_np(2, 0.7, (0.1, 0.0, -0.2))
        v = v @ _rotation(3).T * np.array([1.0, 1.4, 0.7])
    else:
        v, f = box_mesh_np([-1.0, -0.5, -0.3], [1.0, 0.6, 0.4])
        v = v @ _rotation(4).T
    g = 12
    for cube in (True, False):
        fast = build_sdf_grid(jnp.asarray(v), jnp.asarray(f), grid_size=g, cube=cube)
        brute = build_sdf_grid_brute(jnp.asarray(v), jnp.asarray(f), grid_size=g, cube=cube)
        ref = sdf_grid_np(v, f, np.asarray(fast.lo), np.asarray(fast.spacing), g)
        assert (ref > 0).sum() > 50
        np.testing.assert_allclose(np.asarray(fast.values), ref, atol=1e-12)
        np.testing.assert_allclose(np.asarray(brute.values), ref, atol=1e-12)


def test_grid_watertight_on_edges_and_vertices(x64):
    """Grid columns pass exactly through box edges, face diagonals and corners (dyadic coordinates): the
    tie-breaking must count every crossing once, so the grid equals the analytic box SDF everywhere."""
    v, f = box_mesh_np([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])
    g = 17  # padding 1.5 -> grid from -1.5 to 1.5, spacing 3/16: columns at -1.125, ..., 0, ..., exact in binary
    grid = build_sdf_grid(jnp.asarray(v), jnp.asarray(f), grid_size=g, padding=1.5)
    x = -1.5 + np.arange(g) * 3.0 / 16
    xx, yy, zz = np.meshgrid(x, x, x, indexing="ij")
    inside = (np.abs(xx) < 1) & (np.abs(yy) < 1) & (np.abs(zz) < 1)
    want = np.where(inside, 1 - np.maximum(np.maximum(np.abs(xx), np.abs(yy)), np.abs(zz)), 0.0)
    np.testing.assert_allclose(np.asarray(grid.values), want, atol=1e-12)
    # a mesh whose vertices all lie on grid columns (octahedron with corners at +-0.75 on the axes)
    ov = np.array([[0.75, 0, 0], [-0.75, 0, 0], [0, 0.75, 0], [0, -0.75, 0], [0, 0, 0.75], [0, 0, -0.75]])
    of = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    og = build_sdf_grid(jnp.asarray(ov), jnp.asarray(of), grid_size=g, padding=2.0)
    xo = -1.5 + np.arange(g) * 3.0 / 16
    xx, yy, zz = np.meshgrid(xo, xo, xo, indexing="ij")
    l1 = np.abs(xx) + np.abs(yy) + np.abs(zz)
    want = np.where(l1 < 0.75, (0.75 - l1) / np.sqrt(3.0), 0.0)
    np.testing.assert_allclose(np.asarray(og.values), want, atol=1e-12)


def test_sample_sdf_trilinear_and_outside_zero(x64):
    rng = np.random.default_rng(5)
    vals = rng.uniform(size=(6, 6, 6))
    grid_lo, spacing = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.2, 0.3, 0.1])
    from h4djax.collision import SdfGrid

    grid = SdfGrid(values=jnp.asarray(vals), lo=grid_lo, spacing=spacing)
    u = rng.uniform(0, 5, size=(50, 3))
    pts = np.asarray(grid_lo) + u * np.asarray(spacing)
    from scipy.interpolate import RegularGridInterpolator

    axes = [np.arange(6.0)] * 3
    want = RegularGridInterpolator(axes, vals)(u)
    np.testing.assert_allclose(np.asarray(sample_sdf(grid, jnp.asarray(pts))), want, atol=1e-12)
    outside = np.asarray(grid_lo) + np.array([[-0.01, 2, 2], [2, 5.01, 2], [2, 2, 7.0]]) * np.asarray(spacing)
    np.testing.assert_array_equal(np.asarray(sample_sdf(grid, jnp.asarray(outside))), 0.0)


# ------------------------------------------------------------------------------------------------ loss


def _two_boxes():
    """Big box A = [-1, 1]^3 and a small box B inside it near A's +x face: B's corners have analytic depth 1 - x in
    A (the face x = 1 is the closest, also at every grid corner around them, so trilinear sampling is exact);
    A's corners are far outside B's grid."""
    va, f = box_mesh_np([-1, -1, -1], [1, 1, 1])
    vb, fb = box_mesh_np([0.5, 0.05, -0.25], [0.6, 0.15, -0.15])
    assert np.array_equal(f, fb)
    return np.stack([va, vb]), f


def test_loss_known_overlap_boxes(x64):
    verts, f = _two_boxes()
    s = CollisionSettings()
    loss = collision_loss(jnp.asarray(verts), jnp.asarray(f), s)
    depths_b = 1.0 - verts[1, :, 0]  # 4 corners at x = 0.5 (depth 0.5), 4 at x = 0.6 (0.4)
    np.testing.assert_allclose(float(loss), depths_b.sum() / 4, rtol=1e-12)
    pen = np.asarray(pair_penetration(jnp.asarray(verts), jnp.asarray(f), s))
    np.testing.assert_allclose(pen, [[0, depths_b.sum()], [0, 0]], atol=1e-12)
    # the exact (grid-free) depth agrees
    ex = point_depth_exact(jnp.asarray(verts[0]), jnp.asarray(f), jnp.asarray(verts[1]))
    np.testing.assert_allclose(np.asarray(ex), depths_b, atol=1e-12)
    # robustifier: rho(x) = f / (f + 1), f = (x / s)^2
    rs = CollisionSettings(robustifier=0.3)
    fr = (depths_b / 0.3) ** 2
    np.testing.assert_allclose(float(collision_loss(jnp.asarray(verts), jnp.asarray(f), rs)),
                               np.sum(fr / (fr + 1)) / 4, rtol=1e-12)
    # vertex stride 2 samples corners 0, 2, 4, 6 and multiplies by 2
    s2 = CollisionSettings(vertex_stride=2)
    np.testing.assert_allclose(float(collision_loss(jnp.asarray(verts), jnp.asarray(f), s2)),
                               2 * depths_b[::2].sum() / 4, rtol=1e-12)


def test_loss_zero_when_separated_positive_when_overlapping():
    v, f = icosphere_np(3, 0.5)
    fj = jnp.asarray(f)
    s = CollisionSettings()
    losses = {}
    # centre distances; radius 0.5 -> surfaces touch at 1.0. Grid spacing is 1.2 / 31 = 3.9 cm and trilinear
    # sampling spreads the inside values by up to one cell, so "separated" means more than a cell diagonal apart.
    for gap in (1.2, 1.08, 0.9, 0.7, 0.5):
        verts = jnp.asarray(np.stack([v, v + np.array([gap, 0.0, 0.0])]), jnp.float32)
        losses[gap] = float(collision_loss(verts, fj, s))
    assert losses[1.2] == 0.0  # disjoint bounding boxes
    assert losses[1.08] == 0.0  # boxes overlap, surfaces 8 cm apart
    assert 0 < losses[0.9] < losses[0.7] < losses[0.5]
    # against the exact depth of the other sphere's vertices: the grid estimate is within ~ one cell
    verts = np.stack([v, v + np.array([0.7, 0.0, 0.0])])
    ex = point_depth_exact(jnp.asarray(verts[0]), fj, jnp.asarray(verts[1]))
    exact_loss = 2 * float(jnp.sum(ex)) / 4
    assert abs(losses[0.7] - exact_loss) < 0.1 * exact_loss
    # analytic: a vertex x of B is inside A (sphere of radius 0.5 inscribed-polyhedron) at depth ~0.5 - |x - cA|
    analytic = np.maximum(0.5 - np.linalg.norm(verts[1], axis=1), 0)
    np.testing.assert_allclose(np.asarray(ex), analytic, atol=4e-3)  # polyhedron vs sphere: sagitta of ico3


def test_gradient_matches_finite_differences(x64):
    """d loss / d (penetrating vertices) in float64 vs central differences. B is a small rotated sphere inside A
    near its surface, so A's vertices are outside B's grid and only B's vertices are penetrators."""
    va, f = icosphere_np(2, 1.0)
    vb, _ = icosphere_np(2, 0.2, (0.55, 0.1, -0.05))
    vb = (vb - vb.mean(0)) @ _rotation(7).T + vb.mean(0)
    verts = jnp.asarray(np.stack([va, vb]))
    fj = jnp.asarray(f)
    s = CollisionSettings(padding=1.3)
    loss_fn = jax.jit(lambda x: collision_loss(x, fj, s))
    g = np.asarray(jax.grad(loss_fn)(verts))
    assert np.abs(g[1]).sum() > 0
    rng = np.random.default_rng(8)
    eps = 1e-6
    for n in rng.choice(len(vb), size=8, replace=False):
        for d in range(3):
            e = np.zeros(verts.shape)
            e[1, n, d] = eps
            fd = (float(loss_fn(verts + e)) - float(loss_fn(verts - e))) / (2 * eps)
            np.testing.assert_allclose(g[1, n, d], fd, rtol=1e-6, atol=1e-9)
    # the grid owner gets no gradient from its own grid: A's vertices are outside B's grid, so zero
    np.testing.assert_array_equal(g[0], 0.0)
    assert np.all(np.isfinite(g))


def test_no_recompilation_on_new_data():
    v, f = icosphere_np(2, 0.5)
    fj = jnp.asarray(f)
    traces = []

    @jax.jit
    def fn(verts, settings):
        traces.append(1)
        return jax.value_and_grad(lambda x: collision_loss(x, fj, settings))(verts)

    rng = np.random.default_rng(9)
    for k in range(3):
        verts = jnp.asarray(np.stack([v, v + rng.normal(size=3) * 0.1 + [0.6, 0, 0]]), jnp.float32)
        settings = CollisionSettings(padding=1.2 + 0.1 * k, robustifier=0.05 * k)
        jax.block_until_ready(fn(verts, settings))
    assert len(traces) == 1


def test_frames_batched_equals_per_frame():
    v, f = icosphere_np(2, 0.5)
    fj = jnp.asarray(f)
    rng = np.random.default_rng(10)
    offsets = rng.uniform(0.4, 1.1, size=5)
    verts = jnp.asarray(np.stack([np.stack([v, v + [o, 0.05, 0]]) for o in offsets]), jnp.float32)
    s = CollisionSettings(frame_chunk=2)  # 5 frames, chunks of 2: the remainder path is exercised
    per = jax.jit(lambda x: collision_loss_frames(x, fj, s))(verts)
    single = jax.jit(lambda x: collision_loss(x, fj, s))
    want = np.array([float(single(verts[t])) for t in range(5)])
    np.testing.assert_allclose(np.asarray(per), want, rtol=1e-5, atol=1e-7)
    assert np.sum(want > 0) >= 2
    g = jax.grad(lambda x: jnp.sum(collision_loss_frames(x, fj, s)))(verts)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


def test_three_people_pair_mask():
    v, f = icosphere_np(2, 0.5)
    fj = jnp.asarray(f)
    verts = jnp.asarray(np.stack([v, v + [0.7, 0, 0], v + [5.0, 0, 0]]), jnp.float32)
    pen = np.asarray(pair_penetration(verts, fj, CollisionSettings()))
    assert pen[0, 1] > 0 and pen[1, 0] > 0
    assert np.all(pen[2] == 0) and np.all(pen[:, 2] == 0) and np.all(np.diag(pen) == 0)
    np.testing.assert_allclose(float(collision_loss(verts, fj, CollisionSettings())), pen.sum() / 9, rtol=1e-6)


def test_settings_from_config():
    s = CollisionSettings.from_config(CollisionConfig(grid_size=16, padding=1.3, method="spheres"))
    assert s.grid_size == 16 and s.method == "spheres" and float(s.padding) == pytest.approx(1.3)
    with pytest.raises(ConfigError, match="collision.method"):
        CollisionSettings.from_config(CollisionConfig(method="mesh"))


def test_grid_frame_cube_vs_box():
    v = jnp.asarray(np.array([[0, 0, 0], [2.0, 1.0, 0.5]]))
    lo, sp = grid_frame(v, 5, 1.2, True)
    np.testing.assert_allclose(np.asarray(lo), [1 - 1.2, 0.5 - 1.2, 0.25 - 1.2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sp), [0.6] * 3, rtol=1e-6)
    lo, sp = grid_frame(v, 5, 1.2, False)
    np.testing.assert_allclose(np.asarray(sp), [0.6, 0.3, 0.15], rtol=1e-6)


# ------------------------------------------------------------------------------------------------ spheres


def test_sphere_proxy_lower_bound_and_rigid_invariance():
    v, f = icosphere_np(3, 0.5)
    v = v * np.array([1.0, 2.0, 0.8])  # ellipsoid: several balls needed
    proxy = fit_sphere_proxy(v, f, n_spheres=40, grid_size=32)
    assert proxy.num_spheres > 5
    np.testing.assert_allclose(np.asarray(proxy.anchor_weights).sum(1), 1.0, atol=1e-5)
    pts = np.random.default_rng(11).uniform(-0.6, 0.6, size=(400, 3)) * np.array([1, 2, 0.8])
    vj = jnp.asarray(v, jnp.float32)
    c, r = pose_spheres(proxy, vj)
    est = np.asarray(sphere_depth(c, r, jnp.asarray(pts, jnp.float32)))
    ex = np.asarray(point_depth_exact(vj, jnp.asarray(f), jnp.asarray(pts, jnp.float32)))
    assert np.all(est <= ex + 2e-3)  # inscribed balls: lower bound (up to float32 and grid sampling)
    inside = ex > 0.02
    assert np.mean(est[inside] > 0) > 0.9 and np.mean(ex[inside] - est[inside]) < 0.03
    # rigid motion of the mesh moves the balls exactly
    rot, t = _rotation(12), np.array([0.3, -1.0, 2.0])
    c2, r2 = pose_spheres(proxy, jnp.asarray(v @ rot.T + t, jnp.float32))
    est2 = np.asarray(sphere_depth(c2, r2, jnp.asarray(pts @ rot.T + t, jnp.float32)))
    np.testing.assert_allclose(est2, est, atol=1e-4)


def test_sphere_method_loss_and_gradient():
    v, f = icosphere_np(3, 0.5)
    proxy = fit_sphere_proxy(v, f, n_spheres=16, grid_size=24)
    mesh = CollisionMesh(faces=jnp.asarray(f), spheres=proxy)
    s = CollisionSettings(method="spheres")
    far = jnp.asarray(np.stack([v, v + [1.2, 0, 0]]), jnp.float32)
    near = jnp.asarray(np.stack([v, v + [0.7, 0, 0]]), jnp.float32)
    assert float(collision_loss(far, mesh, s)) == 0.0
    val, g = jax.value_and_grad(lambda x: collision_loss(x, mesh, s))(near)
    assert float(val) > 0 and np.all(np.isfinite(np.asarray(g)))
    # close to the grid-free exact loss (the inscribed big ball of a sphere is nearly exact)
    ex = point_depth_exact(near[0], jnp.asarray(f), near[1])
    np.testing.assert_allclose(float(val), 2 * float(jnp.sum(ex)) / 4, rtol=0.1)
    d = pair_depths(near, mesh, s)
    assert d.shape == (2, 2, v.shape[0])
