"""Inter-person collision loss (PIPELINE.md step 6): the SDF penalty of Jiang et al. (CVPR 2020) as used by
EgoHumans / Harmony4D stage 3, jitted and batched over people and frames.

For one frame with P people:

    loss = (1 / P^2) * sum_{i != j, boxes of i and j overlap} sum_{v in verts_j[::stride]} rho(phi_i(v)) * stride

phi_i is person i's SDF grid (distance to the surface inside the mesh, 0 outside, trilinear, 0 outside the grid),
built from `stop_gradient(verts_i)`: the grid is a constant and gradients flow only to the penetrating (other)
people's vertices, exactly like the reference (`torch.no_grad` around the grid build and the boxes). Reference
details kept: cube grid over the 1.2x padded box, pairs whose unpadded bounding boxes do not overlap contribute 0
(`filter_isolated_boxes`), normalization by P^2, optional Geman-McClure robustifier rho(x) = f / (f + 1),
f = (x / robustifier)^2 (off when robustifier = 0). `vertex_stride` > 1 samples every n-th vertex and multiplies
by the stride, so the loss scale (and the stage weight) does not depend on it.

`method="spheres"` replaces phi_i by the sphere-proxy depth (`spheres.py`): same formula, no grid build.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from h4djax.collision.geometry import inside_from_winding, winding_numbers
from h4djax.collision.grid import (
    SdfGrid,
    build_sdf_grid,
    build_sdf_grid_brute,
    inside_distance_pruned,
    sample_sdf,
)
from h4djax.collision.spheres import SphereProxy, pose_spheres, sphere_depth

__all__ = [
    "CollisionSettings",
    "CollisionMesh",
    "build_grids",
    "pair_depths",
    "pair_penetration",
    "collision_loss",
    "collision_loss_frames",
    "make_collision_fn",
    "point_depth_exact",
]

_METHODS = ("sdf", "spheres")
_BUILDERS = ("fast", "brute")


@struct.dataclass
class CollisionSettings:
    """Jit-side settings of the collision loss. Numeric fields are traced (changing them does not recompile);
    the ones that change shapes or the program are static."""

    padding: Float[Array, ""] | float = 1.2
    """Grid half-size = padding x half the bounding-box extent (EgoHumans 1 + 0.2)."""
    robustifier: Float[Array, ""] | float = 0.0
    """Geman-McClure scale (metres) applied to each sampled depth; 0 = plain sum (EgoHumans default)."""
    grid_size: int = struct.field(pytree_node=False, default=32)
    vertex_stride: int = struct.field(pytree_node=False, default=1)
    method: str = struct.field(pytree_node=False, default="sdf")
    """"sdf" (grid, reference behaviour) or "spheres" (sphere proxy; needs `CollisionMesh.spheres`)."""
    cube: bool = struct.field(pytree_node=False, default=True)
    """True: cube grid over the largest box extent (reference); False: per-axis padded box (finer on thin axes)."""
    builder: str = struct.field(pytree_node=False, default="fast")
    """"fast" (ray parity + branch-and-bound distance, closed meshes) or "brute" (winding numbers, any mesh)."""
    frame_chunk: int = struct.field(pytree_node=False, default=0)
    """Frames vmapped together inside `collision_loss_frames` (chunks run as a sequential lax.map): bounds memory.
    0 = automatic: 1 on CPU (batched while loops only add work there: 112 vs 182 ms per frame at 1 vs 4),
    64 on GPU/TPU (where the batch is what fills the device)."""

    @classmethod
    def from_config(cls, cfg) -> "CollisionSettings":
        """From the host-side `h4djax.config.CollisionConfig`."""
        if cfg.method not in _METHODS:
            from h4djax.errors import ConfigError

            raise ConfigError(f"collision.method: expected one of {_METHODS}, got {cfg.method!r}")
        if cfg.builder not in _BUILDERS:
            from h4djax.errors import ConfigError

            raise ConfigError(f"collision.builder: expected one of {_BUILDERS}, got {cfg.builder!r}")
        if cfg.grid_size < 2 or cfg.vertex_stride < 1 or cfg.frame_chunk < 0:
            from h4djax.errors import ConfigError

            raise ConfigError("collision: grid_size must be >= 2, vertex_stride >= 1, frame_chunk >= 0 "
                              f"(got {cfg.grid_size}, {cfg.vertex_stride}, {cfg.frame_chunk})")
        return cls(padding=float(cfg.padding), robustifier=float(cfg.robustifier), grid_size=int(cfg.grid_size),
                   vertex_stride=int(cfg.vertex_stride), method=cfg.method, cube=bool(cfg.grid_cube),
                   builder=cfg.builder, frame_chunk=int(cfg.frame_chunk))


@struct.dataclass
class CollisionMesh:
    """Topology shared by all people (one body model): faces, and the sphere proxy when method="spheres"."""

    faces: Int[Array, "faces 3"]
    """Triangles, counter-clockwise seen from outside (the body model's faces)."""
    spheres: SphereProxy | None = None


def _as_mesh(mesh: CollisionMesh | Int[Array, "faces 3"]) -> CollisionMesh:
    return mesh if isinstance(mesh, CollisionMesh) else CollisionMesh(faces=jnp.asarray(mesh))


def build_grids(
    verts: Float[Array, "people verts 3"], mesh: CollisionMesh | Int[Array, "faces 3"], settings: CollisionSettings
) -> SdfGrid:
    """One SDF grid per person (leading axis people), from stop_gradient(verts)."""
    mesh = _as_mesh(mesh)
    v = jax.lax.stop_gradient(verts)
    if settings.builder == "brute":
        build = lambda x: build_sdf_grid_brute(x, mesh.faces, grid_size=settings.grid_size,  # noqa: E731
                                               padding=settings.padding, cube=settings.cube)
    else:
        build = lambda x: build_sdf_grid(x, mesh.faces, grid_size=settings.grid_size,  # noqa: E731
                                         padding=settings.padding, cube=settings.cube)
    return jax.vmap(build)(v)


def pair_depths(
    verts: Float[Array, "people verts 3"], mesh: CollisionMesh | Int[Array, "faces 3"], settings: CollisionSettings
) -> Float[Array, "people people sampled"]:
    """depth[i, j, n] = estimated penetration depth (metres) of person j's n-th sampled vertex in person i.

    Sampled vertices are `verts[:, ::vertex_stride]`. Differentiable w.r.t. the sampled (penetrating) vertices
    only; the owner i's geometry is a constant. The diagonal i == j is 0 (not evaluated).
    """
    mesh = _as_mesh(mesh)
    p = verts.shape[0]
    pts = verts[:, :: settings.vertex_stride]
    # only the P (P - 1) ordered pairs i != j are evaluated (static index lists); the diagonal stays 0
    ii, jj = np.nonzero(~np.eye(p, dtype=bool))
    if settings.method == "spheres":
        if mesh.spheres is None:
            raise ValueError("collision method 'spheres' needs CollisionMesh(spheres=fit_sphere_proxy(...))")
        centre, radius = jax.vmap(lambda v: pose_spheres(mesh.spheres, v))(jax.lax.stop_gradient(verts))
        d = jax.vmap(sphere_depth)(centre[ii], radius[ii], pts[jj])
    else:
        grids = build_grids(verts, mesh, settings)
        d = jax.vmap(sample_sdf)(jax.tree_util.tree_map(lambda a: a[ii], grids), pts[jj])
    return jnp.zeros((p, p, pts.shape[1]), d.dtype).at[ii, jj].set(d)


def _pair_mask(
    verts: Float[Array, "people verts 3"], valid: Bool[Array, "people"] | None
) -> Bool[Array, "people people"]:
    """i != j, both present, and the unpadded bounding boxes of i and j overlap (the reference's isolated-box filter,
    per pair)."""
    v = jax.lax.stop_gradient(verts)
    vmin, vmax = jnp.min(v, axis=1), jnp.max(v, axis=1)
    overlap = jnp.all((vmin[:, None] <= vmax[None]) & (vmin[None] <= vmax[:, None]), axis=-1)
    mask = overlap & ~jnp.eye(v.shape[0], dtype=bool)
    if valid is not None:
        mask = mask & valid[:, None] & valid[None, :]
    return mask


def _robustify(x, scale):
    on = scale > 0
    f = (x / jnp.where(on, scale, 1.0)) ** 2
    return jnp.where(on, f / (f + 1.0), x)


def pair_penetration(
    verts: Float[Array, "people verts 3"],
    mesh: CollisionMesh | Int[Array, "faces 3"],
    settings: CollisionSettings,
    valid: Bool[Array, "people"] | None = None,
) -> Float[Array, "people people"]:
    """pen[i, j] = stride x sum over j's sampled vertices of rho(depth in i) (metres); 0 on the diagonal, for
    pairs with disjoint bounding boxes and for pairs involving a person with valid = False (padding)."""
    d = _robustify(pair_depths(verts, mesh, settings), settings.robustifier)
    return jnp.where(_pair_mask(verts, valid), jnp.sum(d, axis=-1), 0.0) * settings.vertex_stride


def collision_loss(
    verts: Float[Array, "people verts 3"],
    mesh: CollisionMesh | Int[Array, "faces 3"],
    settings: CollisionSettings,
    valid: Bool[Array, "people"] | None = None,
) -> Float[Array, ""]:
    """Collision loss of one frame (metres, see module doc). `verts` in metres, world frame. `valid` marks the
    people present (default all); absent people neither penetrate nor are penetrated, and the 1 / P^2
    normalization counts present people only (the reference's `valid_people`)."""
    pen = jnp.sum(pair_penetration(verts, mesh, settings, valid))
    n = verts.shape[0] if valid is None else jnp.maximum(jnp.sum(valid), 1)
    return pen / (n * n)


def collision_loss_frames(
    verts: Float[Array, "frames people verts 3"],
    mesh: CollisionMesh | Int[Array, "faces 3"],
    settings: CollisionSettings,
    valid: Bool[Array, "frames people"] | None = None,
) -> Float[Array, "frames"]:
    """Per-frame collision losses of a sequence; sum them for the stage-3 term.

    `lax.map` with `batch_size=frame_chunk`: frames are vmapped `frame_chunk` at a time, chunks run sequentially,
    so memory is frame_chunk x people x (grid build working set, ~8 MB for the body mesh, see grid.py) however
    long the sequence. The sequence is padded to whole chunks by repeating its last frame (results dropped), so
    only one loop body is compiled. Differentiable (reverse mode) w.r.t. verts.
    """
    mesh = _as_mesh(mesh)
    n = verts.shape[0]
    if valid is None:
        valid = jnp.ones(verts.shape[:2], bool)
    chunk = settings.frame_chunk or (1 if jax.default_backend() == "cpu" else 64)
    chunk = max(1, min(chunk, n))
    pad = (-n) % chunk
    if pad:
        verts = jnp.concatenate([verts, jnp.repeat(verts[-1:], pad, axis=0)], axis=0)
        valid = jnp.concatenate([valid, jnp.repeat(valid[-1:], pad, axis=0)], axis=0)
    out = jax.lax.map(lambda a: collision_loss(a[0], mesh, settings, a[1]), (verts, valid), batch_size=chunk)
    return out[:n]


def make_collision_fn(mesh: CollisionMesh | Int[Array, "faces 3"], settings: CollisionSettings):
    """Adapter to the fit's `CollisionFn(verts f[people, frames, verts, 3], frame_mask f[people, frames]) -> f[]`:
    the mean collision loss over frames where anyone is present (the fit's terms are masked means, so a weight
    means the same for any sequence length); people with frame_mask 0 in a frame are left out of that frame.
    The returned function is a fixed Python object (hashable), as `fit_batch`'s static `collision_fn` needs."""
    mesh = _as_mesh(mesh)

    def collision_fn(verts, frame_mask):
        valid = jnp.swapaxes(frame_mask, 0, 1) > 0  # [frames, people]
        per = collision_loss_frames(jnp.swapaxes(verts, 0, 1), mesh, settings, valid)
        w = jnp.any(valid, axis=1).astype(per.dtype)
        return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)

    return collision_fn


def point_depth_exact(
    verts: Float[Array, "verts 3"], faces: Int[Array, "faces 3"], points: Float[Array, "n 3"], *, tri_chunk: int = 256
) -> Float[Array, "n"]:
    """Exact penetration depth (metres) of points in one mesh: distance to the surface if the winding number says
    inside, else 0. No grid: the ground truth against which the grid and sphere estimates are measured
    (O(n x faces) winding numbers + branch-and-bound distance)."""
    tris = verts[faces]
    inside = inside_from_winding(winding_numbers(points, tris, tri_chunk=tri_chunk))
    return inside_distance_pruned(tris, points, inside)
