"""Brute-force numpy twin of the SDF grid: the reference for tests and `bench/collision.py`.

It does what the reference CUDA kernel of Jiang et al. (CVPR 2020, `sdf_cuda_kernel.cu` in JiangWenPL/multiperson,
used by EgoHumans) does, on the CPU: for every grid point, loop over ALL triangles (vectorized over triangles with
numpy), keep the minimum point-triangle distance, count ray-triangle intersections (Moller-Trumbore) along a fixed
ray, and zero the value where the count is even (outside). The point-triangle distance follows the kernel's
algorithm (barycentric coordinates of the projection on the plane, else the closer of two candidate edges), which
is a different derivation from the JAX kernel in `geometry.py`, so agreement is an independent check.

Grid convention (same as the JAX builder, `grid.py`): point (i, j, k) sits at `lo + (i, j, k) * spacing`. The CUDA
kernel places points at half-cell offsets that disagree with its own `grid_sample` convention; we do not copy that.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "point_triangles_distance_np",
    "ray_hit_count_np",
    "winding_number_np",
    "sdf_grid_np",
    "grid_points_np",
    "icosphere_np",
    "box_mesh_np",
    "sample_grid_np",
]


def point_triangles_distance_np(p: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Distance from one point p[3] to each triangle tris[T, 3, 3] (float64), via barycentric coordinates."""
    x1, x2, x3 = tris[:, 0], tris[:, 1], tris[:, 2]
    x13, x23, x03 = x1 - x3, x2 - x3, p[None] - x3
    m13 = np.einsum("ij,ij->i", x13, x13)
    m23 = np.einsum("ij,ij->i", x23, x23)
    d = np.einsum("ij,ij->i", x13, x23)
    det = m13 * m23 - d * d
    a = np.einsum("ij,ij->i", x13, x03)
    b = np.einsum("ij,ij->i", x23, x03)
    with np.errstate(divide="ignore", invalid="ignore"):
        w23 = (m23 * a - d * b) / det
        w31 = (m13 * b - d * a) / det
    w12 = 1.0 - w23 - w31
    inside = (det > 1e-30) & (w23 >= 0) & (w31 >= 0) & (w12 >= 0)
    with np.errstate(invalid="ignore"):  # NaN weights of degenerate triangles are masked below
        proj = w23[:, None] * x1 + w31[:, None] * x2 + w12[:, None] * x3
        d_face = np.linalg.norm(p[None] - proj, axis=1)

    def seg(u, v):
        uv = v - u
        m = np.einsum("ij,ij->i", uv, uv)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(m > 0, np.einsum("ij,ij->i", p[None] - u, uv) / m, 0.0)
        t = np.clip(t, 0.0, 1.0)
        return np.linalg.norm(p[None] - (u + t[:, None] * uv), axis=1)

    # Outside the triangle the closest point lies on an edge whose line separates the projection from the triangle,
    # i.e. an edge opposite a vertex with a negative weight; a vertex with a positive weight rules out the edge
    # opposite it, which leaves two candidate edges (the kernel's case split). A degenerate triangle (det = 0) has
    # no valid weights and we take all three edges.
    d12, d13, d23 = seg(x1, x2), seg(x1, x3), seg(x2, x3)
    out = np.where(w23 > 0, np.minimum(d12, d13), np.where(w31 > 0, np.minimum(d12, d23), np.minimum(d13, d23)))
    degenerate = ~(det > 1e-30)
    out = np.where(degenerate, np.minimum(np.minimum(d12, d13), d23), out)
    return np.where(inside, d_face, out)


def ray_hit_count_np(p: np.ndarray, tris: np.ndarray, direction: np.ndarray, eps: float = 1e-12) -> int:
    """Number of triangles hit by the ray p + t * direction, t > 0 (Moller & Trumbore, JGT 1997)."""
    v0, v1, v2 = tris[:, 0], tris[:, 1], tris[:, 2]
    e1, e2 = v1 - v0, v2 - v0
    pvec = np.cross(direction[None], e2)
    det = np.einsum("ij,ij->i", e1, pvec)
    ok = np.abs(det) > eps
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = p[None] - v0
    u = np.einsum("ij,ij->i", tvec, pvec) * inv
    qvec = np.cross(tvec, e1)
    v = np.einsum("j,ij->i", direction, qvec) * inv
    t = np.einsum("ij,ij->i", e2, qvec) * inv
    hit = ok & (u >= 0) & (u <= 1) & (v >= 0) & (u + v <= 1) & (t > 0)
    return int(hit.sum())


def winding_number_np(p: np.ndarray, tris: np.ndarray) -> float:
    """Generalized winding number of p w.r.t. the triangles (Van Oosterom & Strackee solid angles / 4 pi)."""
    a, b, c = tris[:, 0] - p, tris[:, 1] - p, tris[:, 2] - p
    la, lb, lc = (np.linalg.norm(v, axis=1) for v in (a, b, c))
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
           + np.einsum("ij,ij->i", b, c) * la)
    return float(np.sum(2.0 * np.arctan2(det, den)) / (4.0 * np.pi))


def grid_points_np(lo: np.ndarray, spacing: np.ndarray, grid_size: int) -> np.ndarray:
    """Grid point positions [G, G, G, 3], index order (i, j, k) = (x, y, z)."""
    r = np.arange(grid_size, dtype=np.float64)
    ii, jj, kk = np.meshgrid(r, r, r, indexing="ij")
    return lo[None, None, None] + np.stack([ii, jj, kk], -1) * spacing[None, None, None]


# A generic ray direction (not parallel to any axis or mesh-friendly diagonal) to keep edge/vertex hits unlikely.
_RAY_DIR = np.array([0.5773, -0.5421, 0.6108])


def sdf_grid_np(verts: np.ndarray, faces: np.ndarray, lo: np.ndarray, spacing: np.ndarray, grid_size: int,
                inside: str = "parity") -> np.ndarray:
    """Brute-force grid [G, G, G]: distance to the surface inside the mesh, 0 outside (float64).

    inside="parity": odd number of ray hits (the CUDA kernel's test); "winding": winding number > 0.5.
    One Python iteration per grid point, numpy over all triangles (the reference kernel's loop structure).
    """
    tris = np.asarray(verts, np.float64)[np.asarray(faces)]
    pts = grid_points_np(np.asarray(lo, np.float64), np.asarray(spacing, np.float64), grid_size).reshape(-1, 3)
    out = np.zeros(len(pts))
    for n, p in enumerate(pts):
        d = point_triangles_distance_np(p, tris).min()
        if inside == "parity":
            is_in = ray_hit_count_np(p, tris, _RAY_DIR) % 2 == 1
        else:
            is_in = abs(winding_number_np(p, tris)) > 0.5
        out[n] = d if is_in else 0.0
    return out.reshape(grid_size, grid_size, grid_size)


def icosphere_np(subdivisions: int, radius: float = 1.0, center=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere (vertices on the sphere, outward CCW faces): 20 * 4^s faces, 10 * 4^s + 2 vertices."""
    t = (1.0 + 5.0 ** 0.5) / 2.0
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]
    verts = [np.array(x, np.float64) / np.linalg.norm(x) for x in v]
    faces = [tuple(x) for x in f]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(i, j):
            key = (min(i, j), max(i, j))
            if key not in cache:
                m = verts[i] + verts[j]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    verts_arr = np.stack(verts) * radius + np.asarray(center, np.float64)
    return verts_arr, np.asarray(faces, np.int32)


def box_mesh_np(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box as 8 vertices and 12 outward CCW triangles."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64)
    verts = lo + corners * (hi - lo)
    # vertex index = 4x + 2y + z
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, c, d in quads:
        faces += [(a, b, c), (a, c, d)]
    faces = np.asarray(faces, np.int32)
    # orient outward: the normal must point away from the box centre
    ctr = verts.mean(0)
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("ij,ij->i", n, tri.mean(1) - ctr) < 0
    faces[flip] = faces[flip][:, ::-1]
    return verts, faces


def sample_grid_np(values: np.ndarray, lo: np.ndarray, spacing: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a [G, G, G] grid at points [n, 3] (numpy); 0 outside the grid."""
    g = values.shape[0]
    u = (np.asarray(points, np.float64) - lo) / spacing
    ok = np.all((u >= 0) & (u <= g - 1), axis=1)
    i0 = np.clip(np.floor(u), 0, g - 2).astype(int)
    t = u - i0
    out = np.zeros(len(u))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = ((t[:, 0] if dx else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1])
                     * (t[:, 2] if dz else 1 - t[:, 2]))
                out += w * values[i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz]
    return np.where(ok, out, 0.0)
