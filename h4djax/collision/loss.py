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

In the body fit, building the grids dominates the cost (~0.25 s per frame pair on 2 CPU cores, against ~4 ms for
sampling them and differentiating): `CollisionTerm` therefore keeps each person-frame's grid between optimizer
iterations (`GridCache`) and rebuilds it only when that person's vertices have moved more than `grid_tolerance`
metres since it was built (`refresh_grids`). Because the reference treats the grid as a constant anyway
(`torch.no_grad`), a cached grid changes only WHERE the constant comes from: its values differ from a fresh grid's
by about the tolerance (the inside distance is 1-Lipschitz in the surface position). `grid_tolerance = 0` rebuilds
whenever anything moved, which is the reference exactly. Person-frames whose bounding box overlaps nobody's are
never built (they contribute 0 in the reference too).
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
    "CollisionTerm",
    "GridCache",
    "init_grid_cache",
    "refresh_grids",
    "collision_loss_cached",
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
    grid_tolerance: Float[Array, ""] | float = 0.0
    """Fit only (`CollisionTerm.apply`): a person-frame's cached grid is rebuilt when one of its vertices moved more
    than this (metres) since the grid was built; 0 = whenever anything moved (the reference: a fresh grid in every
    evaluation). Traced."""
    grid_size: int = struct.field(pytree_node=False, default=32)
    vertex_stride: int = struct.field(pytree_node=False, default=1)
    method: str = struct.field(pytree_node=False, default="sdf")
    """"sdf" (grid, reference behaviour) or "spheres" (sphere proxy; needs `CollisionMesh.spheres`)."""
    cube: bool = struct.field(pytree_node=False, default=True)
    """True: cube grid over the largest box extent (reference); False: per-axis padded box (finer on thin axes)."""
    builder: str = struct.field(pytree_node=False, default="fast")
    """"fast" (ray parity + branch-and-bound distance, closed meshes) or "brute" (winding numbers, any mesh)."""
    grid_refresh: int = struct.field(pytree_node=False, default=1)
    """Fit only (`CollisionTerm.apply`): stale grids are looked for and rebuilt every n-th evaluation (the n-1 in
    between use the cache as it is); 1 = every evaluation."""
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
        if (cfg.grid_size < 2 or cfg.vertex_stride < 1 or cfg.frame_chunk < 0 or not cfg.grid_tolerance >= 0
                or cfg.grid_refresh < 1):
            from h4djax.errors import ConfigError

            raise ConfigError("collision: grid_size must be >= 2, vertex_stride >= 1, frame_chunk >= 0, "
                              f"grid_tolerance >= 0, grid_refresh >= 1 (got {cfg.grid_size}, {cfg.vertex_stride}, "
                              f"{cfg.frame_chunk}, {cfg.grid_tolerance}, {cfg.grid_refresh})")
        return cls(padding=float(cfg.padding), robustifier=float(cfg.robustifier),
                   grid_tolerance=float(cfg.grid_tolerance), grid_size=int(cfg.grid_size),
                   vertex_stride=int(cfg.vertex_stride), method=cfg.method, cube=bool(cfg.grid_cube),
                   builder=cfg.builder, frame_chunk=int(cfg.frame_chunk), grid_refresh=int(cfg.grid_refresh))


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
    return jax.vmap(lambda x: _build_one(x, mesh, settings))(jax.lax.stop_gradient(verts))


def _build_one(verts: Float[Array, "verts 3"], mesh: CollisionMesh, settings: CollisionSettings) -> SdfGrid:
    builder = build_sdf_grid_brute if settings.builder == "brute" else build_sdf_grid
    return builder(jax.lax.stop_gradient(verts), mesh.faces, grid_size=settings.grid_size, padding=settings.padding,
                   cube=settings.cube)


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
        return _sample_pairs(build_grids(verts, mesh, settings), pts)
    return jnp.zeros((p, p, pts.shape[1]), d.dtype).at[ii, jj].set(d)


def _sample_pairs(grids: SdfGrid, pts: Float[Array, "people sampled 3"]) -> Float[Array, "people people sampled"]:
    """depth[i, j] = person i's grid sampled at person j's points, for the ordered pairs i != j (diagonal 0)."""
    p = pts.shape[0]
    ii, jj = np.nonzero(~np.eye(p, dtype=bool))
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
    mask = _pair_mask(verts, valid)

    def penetration():
        d = _robustify(pair_depths(verts, mesh, settings), settings.robustifier)
        return jnp.sum(jnp.where(mask, jnp.sum(d, axis=-1), 0.0)) * settings.vertex_stride

    # No pair's boxes overlap -> nothing to build (the reference's isolated-box filter gives 0 for every pair).
    # A real branch when not vmapped (collision_loss_frames on CPU); under vmap it becomes a select (same value).
    pen = jax.lax.cond(jnp.any(mask), penetration, lambda: jnp.zeros((), verts.dtype))
    return pen / _norm(verts.shape[0], valid)


def _norm(p: int, valid):
    n = p if valid is None else jnp.maximum(jnp.sum(valid), 1)
    return n * n


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
    chunk = max(1, min(_frame_chunk(settings), n))
    pad = (-n) % chunk
    if pad:
        verts = jnp.concatenate([verts, jnp.repeat(verts[-1:], pad, axis=0)], axis=0)
        valid = jnp.concatenate([valid, jnp.repeat(valid[-1:], pad, axis=0)], axis=0)
    out = jax.lax.map(lambda a: collision_loss(a[0], mesh, settings, a[1]), (verts, valid), batch_size=_batch(chunk))
    return out[:n]


def _frame_chunk(settings: CollisionSettings) -> int:
    return settings.frame_chunk or (1 if jax.default_backend() == "cpu" else 64)


def _batch(chunk: int) -> int | None:
    # lax.map(batch_size=1) still vmaps (over a size-1 axis), which turns every lax.cond inside into a select that
    # runs both branches; batch_size=None is a plain scan, so skipped grid builds are really skipped.
    return None if chunk == 1 else chunk


@struct.dataclass
class GridCache:
    """Per person-frame SDF grids kept between evaluations of the fit's collision term (`refresh_grids`).

    grids: SdfGrid with leaves values f[frames, people, g, g, g], lo / spacing f[frames, people, 3].
    source: f[frames, people, verts, 3] the vertices each grid was built from (metres; +inf = never built).
    builds: i[] grids built so far (diagnostic: the cost of the term is about builds x one grid build).
    step: i[] evaluations so far (`CollisionTerm.apply` refreshes when step % grid_refresh == 0).
    """

    grids: SdfGrid
    source: Float[Array, "frames people verts 3"]
    builds: Int[Array, ""]
    step: Int[Array, ""]


def init_grid_cache(frames: int, people: int, num_verts: int, settings: CollisionSettings,
                    dtype=jnp.float32) -> GridCache:
    """An empty cache (nothing built: the first `refresh_grids` builds every grid that is needed)."""
    g = settings.grid_size
    grids = SdfGrid(values=jnp.zeros((frames, people, g, g, g), dtype), lo=jnp.zeros((frames, people, 3), dtype),
                    spacing=jnp.ones((frames, people, 3), dtype))
    return GridCache(grids=grids, source=jnp.full((frames, people, num_verts, 3), jnp.inf, dtype),
                     builds=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32))


def refresh_grids(
    cache: GridCache,
    verts: Float[Array, "frames people verts 3"],
    mesh: CollisionMesh | Int[Array, "faces 3"],
    settings: CollisionSettings,
    valid: Bool[Array, "frames people"] | None = None,
) -> GridCache:
    """Rebuild the grids that are needed and stale; keep the others.

    A person-frame's grid is needed when its unpadded bounding box overlaps a present other person's (otherwise
    the reference gives its pairs 0), and stale when one of its vertices moved more than
    `settings.grid_tolerance` metres since the grid was built (or it was never built). Builds run in a sequential
    `lax.map` over person-frames with a `lax.cond` each (`frame_chunk` > 1 vmaps chunks: the cond then becomes a
    select and every grid is rebuilt, same values, no saving). Not differentiable (the grids are constants).
    """
    mesh = _as_mesh(mesh)
    v = jax.lax.stop_gradient(verts)
    f, p, nv = v.shape[:3]
    if valid is None:
        valid = jnp.ones((f, p), bool)
    needed = jnp.any(jax.vmap(_pair_mask)(v, valid), axis=-1)  # [F, P]
    moved2 = jnp.max(jnp.sum((v - cache.source) ** 2, axis=-1), axis=-1)  # +inf where never built
    tol = jnp.asarray(settings.grid_tolerance, v.dtype)
    stale = needed & (moved2 > tol * tol)

    def one(a):
        s_, x, old = a
        return jax.lax.cond(s_, lambda: _build_one(x, mesh, settings), lambda: old)

    flat = lambda t: t.reshape((f * p,) + t.shape[2:])  # noqa: E731
    grids = jax.lax.map(one, (flat(stale), flat(v), jax.tree_util.tree_map(flat, cache.grids)),
                        batch_size=_batch(max(1, min(_frame_chunk(settings), f * p))))
    grids = jax.tree_util.tree_map(lambda t: t.reshape((f, p) + t.shape[1:]), grids)
    source = jnp.where(stale[..., None, None], v, cache.source)
    return GridCache(grids=grids, source=source, builds=cache.builds + jnp.sum(stale, dtype=jnp.int32),
                     step=cache.step)


def collision_loss_cached(
    cache: GridCache,
    verts: Float[Array, "frames people verts 3"],
    settings: CollisionSettings,
    valid: Bool[Array, "frames people"] | None = None,
) -> Float[Array, "frames"]:
    """Per-frame collision losses with the cache's grids (the formula of `collision_loss`, grids from `cache`);
    differentiable w.r.t. `verts` (the penetrating vertices), the pair mask from the current vertices."""
    if valid is None:
        valid = jnp.ones(verts.shape[:2], bool)

    def frame(grids, x, ok):
        mask = _pair_mask(x, ok)
        d = _robustify(_sample_pairs(grids, x[:, :: settings.vertex_stride]), settings.robustifier)
        pen = jnp.sum(jnp.where(mask, jnp.sum(d, axis=-1), 0.0)) * settings.vertex_stride
        return pen / _norm(x.shape[0], ok)

    return jax.vmap(frame)(cache.grids, verts, valid)


class CollisionTerm:
    """The fit's collision term (`h4djax.fit.fit.CollisionFn`): `term(verts f[people, frames, verts, 3],
    frame_mask f[people, frames]) -> f[]`, the mean collision loss over frames where anyone is present (the fit's
    terms are masked means, so a weight means the same for any sequence length); people with frame_mask 0 in a
    frame are left out of that frame. Calling it builds every needed grid (the reference).

    With method "sdf" it is also stateful (`stateful = True`), which the fit's Adam stages use:
    `init_state(people, frames, verts, dtype) -> GridCache` and `apply(state, verts, frame_mask) -> (loss,
    state)`, which refreshes the stale grids (`refresh_grids`, `grid_tolerance`) every `grid_refresh`-th call and
    evaluates with the cache.
    A fixed Python object hashed by identity, as `fit_batch`'s static `collision_fn` needs.
    """

    def __init__(self, mesh: CollisionMesh | Int[Array, "faces 3"], settings: CollisionSettings):
        self.mesh = _as_mesh(mesh)
        self.settings = settings
        self.stateful = settings.method == "sdf"

    @staticmethod
    def _frames(frame_mask):
        valid = jnp.swapaxes(frame_mask, 0, 1) > 0  # [frames, people]
        return valid, jnp.any(valid, axis=1)

    @staticmethod
    def _mean(per, present):
        w = present.astype(per.dtype)
        return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)

    def __call__(self, verts: Float[Array, "people frames verts 3"],
                 frame_mask: Float[Array, "people frames"]) -> Float[Array, ""]:
        valid, present = self._frames(frame_mask)
        per = collision_loss_frames(jnp.swapaxes(verts, 0, 1), self.mesh, self.settings, valid)
        return self._mean(per, present)

    def init_state(self, people: int, frames: int, num_verts: int, dtype=jnp.float32) -> GridCache:
        return init_grid_cache(frames, people, num_verts, self.settings, dtype)

    def apply(self, state: GridCache, verts: Float[Array, "people frames verts 3"],
              frame_mask: Float[Array, "people frames"]) -> tuple[Float[Array, ""], GridCache]:
        valid, present = self._frames(frame_mask)
        v = jnp.swapaxes(verts, 0, 1)
        refresh = lambda st: refresh_grids(st, v, self.mesh, self.settings, valid)  # noqa: E731
        if self.settings.grid_refresh == 1:
            state = refresh(state)
        else:
            state = jax.lax.cond(state.step % self.settings.grid_refresh == 0, refresh, lambda st: st, state)
        state = state.replace(step=state.step + 1)
        return self._mean(collision_loss_cached(state, v, self.settings, valid), present), state


def make_collision_fn(mesh: CollisionMesh | Int[Array, "faces 3"], settings: CollisionSettings) -> CollisionTerm:
    """The fit's collision term for `mesh` and `settings` (a `CollisionTerm`, see there)."""
    return CollisionTerm(mesh, settings)


def point_depth_exact(
    verts: Float[Array, "verts 3"], faces: Int[Array, "faces 3"], points: Float[Array, "n 3"], *, tri_chunk: int = 256
) -> Float[Array, "n"]:
    """Exact penetration depth (metres) of points in one mesh: distance to the surface if the winding number says
    inside, else 0. No grid: the ground truth against which the grid and sphere estimates are measured
    (O(n x faces) winding numbers + branch-and-bound distance)."""
    tris = verts[faces]
    inside = inside_from_winding(winding_numbers(points, tris, tri_chunk=tri_chunk))
    return inside_distance_pruned(tris, points, inside)


class GridBuildCounter:
    """Diagnostic wrapper of a stateful collision term: same values and gradients, and records
    `(evaluation step, grids built in that evaluation)` on the host after every `apply` (a `jax.debug.callback`),
    to measure what the grid cache saves against the reference's one build per needed person-frame and iteration.
    Used by `bench/collision_fit.py` and the tests; not for production fits (the callback syncs with the host)."""

    def __init__(self, term):
        self.term, self.stateful, self.builds = term, getattr(term, "stateful", False), []

    def __call__(self, verts, frame_mask):
        return self.term(verts, frame_mask)

    def init_state(self, *args, **kwargs):
        return self.term.init_state(*args, **kwargs)

    def apply(self, state, verts, frame_mask):
        value, new = self.term.apply(state, verts, frame_mask)
        jax.debug.callback(lambda s, b: self.builds.append((int(s), int(b))), new.step, new.builds - state.builds)
        return value, new
