"""Keypoint visibility in every camera from coarse per-person depth buffers (JAX, batched over frames).

For each frame, camera and person, the person's mesh vertices (every `stride`-th) are projected and splatted into a
`grid x grid` buffer spanning the person's projected box, keeping the smallest distance to the camera per cell
(a z-buffer of points: a body mesh of ~14k vertices is dense enough at ~3 cm per cell that splatting vertices
closes the surface; isolated empty cells inside the silhouette are filled from their neighbours). A keypoint of
person q is hidden by person p in a camera when it falls inside p's buffer and lies more than a margin behind the
surface stored there: `self_margin` for p == q (joints such as hips lie inside their own body), `mutual_margin`
for another person. Distances are along the camera ray (Euclidean distance to the camera centre), which orders
points on one ray correctly for any lens model, fisheye included.

The same pass returns each person's tight image box (from the projected mesh), which the noise model uses for the
person's size in pixels and for box overlap during contact.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from h4djax.geometry import Cameras, project

__all__ = ["Visibility", "keypoint_visibility"]

_FAR = 1e9


@struct.dataclass
class Visibility:
    """Per frame, camera, person (and keypoint) visibility facts.

    box:       f[frames, cams, people, 4]   x1, y1, x2, y2 (px) of the projected mesh (in-front vertices only).
    in_front:  b[frames, cams, people]      whether most of the person is in front of the camera.
    occluder:  i[frames, cams, people, kpts]  index of the nearest person hiding the keypoint (itself included), -1
               when visible.
    depth_gap: f[frames, cams, people, kpts] how far (m) the keypoint lies behind the occluding surface (0 if visible).
    """

    box: Float[Array, "frames cams people 4"]
    in_front: Bool[Array, "frames cams people"]
    occluder: Int[Array, "frames cams people kpts"]
    depth_gap: Float[Array, "frames cams people kpts"]


def _fill_holes(buf: Float[Array, "g g"]) -> Float[Array, "g g"]:
    """Empty cells with at least 5 of 8 filled neighbours take their nearest neighbour depth (closes pinholes
    between splatted vertices without growing the silhouette)."""
    g = buf.shape[0]
    pad = jnp.pad(buf, 1, constant_values=_FAR)
    shifts = [pad[1 + dy : 1 + dy + g, 1 + dx : 1 + dx + g] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    nb = jnp.stack(shifts)
    filled = jnp.sum(nb < _FAR, 0)
    return jnp.where((buf >= _FAR) & (filled >= 5), jnp.min(nb, 0), buf)


def _one_view(
    uv_v: Float[Array, "people verts 2"], rng_v: Float[Array, "people verts"], ok_v: Bool[Array, "people verts"],
    uv_k: Float[Array, "people kpts 2"], rng_k: Float[Array, "people kpts"], ok_k: Bool[Array, "people kpts"],
    grid: int, self_margin: Float[Array, ""], mutual_margin: Float[Array, ""],
):
    """Buffers and occlusion tests for one frame in one camera."""
    P = uv_v.shape[0]
    big = jnp.where(ok_v[..., None], uv_v, jnp.nan)
    lo = jnp.nan_to_num(jnp.nanmin(big, 1), nan=0.0)  # [P, 2]
    hi = jnp.nan_to_num(jnp.nanmax(big, 1), nan=0.0)
    ext = jnp.maximum(hi - lo, 1e-6)

    def cell(uv, p):  # grid cell of pixels uv [..., 2] in person p's box, and whether inside it
        g = jnp.floor((uv - lo[p]) / ext[p] * grid).astype(jnp.int32)
        inside = jnp.all((g >= 0) & (g < grid), -1)
        return jnp.clip(g, 0, grid - 1), inside

    def buffer(p):
        g, inside = cell(uv_v[p], p)
        flat = g[:, 1] * grid + g[:, 0]
        val = jnp.where(ok_v[p] & inside, rng_v[p], _FAR)
        buf = jnp.full((grid * grid,), _FAR, rng_v.dtype).at[flat].min(val)
        return _fill_holes(buf.reshape(grid, grid))

    bufs = jax.vmap(buffer)(jnp.arange(P))  # [P, g, g]

    def test(q, p):  # keypoints of person q against the buffer of person p: depth behind the surface (or -inf)
        g, inside = cell(uv_k[q], p)
        surf = bufs[p][g[:, 1], g[:, 0]]
        gap = rng_k[q] - surf
        margin = jnp.where(p == q, self_margin, mutual_margin)
        hidden = inside & ok_k[q] & (surf < _FAR) & (gap > margin)
        return jnp.where(hidden, gap, -jnp.inf), jnp.where(hidden, surf, jnp.inf)

    idx = jnp.arange(P)
    gaps, surfs = jax.vmap(lambda q: jax.vmap(lambda p: test(q, p))(idx))(idx)  # [Pq, Pp, K]
    # The occluder is the person whose surface is nearest to the camera along the ray.
    occ = jnp.argmin(surfs, axis=1)  # [Pq, K]
    any_hidden = jnp.any(jnp.isfinite(gaps), axis=1)
    gap = jnp.take_along_axis(gaps, occ[:, None, :], 1)[:, 0]
    box = jnp.concatenate([lo, hi], -1)
    in_front = jnp.mean(ok_v, -1) > 0.5
    return box, in_front, jnp.where(any_hidden, occ, -1), jnp.where(any_hidden, gap, 0.0)


def keypoint_visibility(
    cams: Cameras, verts: Float[Array, "frames people verts 3"], kpts: Float[Array, "frames people kpts 3"],
    grid: int = 64, self_margin: float = 0.1, mutual_margin: float = 0.03, frame_chunk: int = 16,
) -> Visibility:
    """Visibility of every keypoint in every camera (see module docstring). `verts` is the (subsampled) mesh.

    `grid` and `frame_chunk` are static (shapes); the margins are traced. Memory scales with frame_chunk x cams x
    people x verts.
    """
    return _keypoint_visibility(cams, verts, kpts, jnp.asarray(self_margin, verts.dtype),
                                jnp.asarray(mutual_margin, verts.dtype), grid, frame_chunk)


def _range(x: Float[Array, "people n 3"], center: Float[Array, "cams 3"]) -> Float[Array, "cams people n"]:
    # Explicit components: XLA on CPU is far slower on a norm over a trailing axis of 3 after broadcasting.
    d = [x[None, ..., i] - center[:, i, None, None] for i in range(3)]
    return jnp.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])


@partial(jax.jit, static_argnames=("grid", "frame_chunk"))
def _keypoint_visibility(cams, verts, kpts, self_margin, mutual_margin, grid, frame_chunk):
    center = -jnp.einsum("cji,cj->ci", cams.R, cams.t)

    def frame(vk):
        v, k = vk  # [P, V, 3], [P, K, 3]
        uv_v, ok_v = project(cams, v)  # [C, P, V, 2]
        uv_k, ok_k = project(cams, k)
        rng_v = _range(v, center)
        rng_k = _range(k, center)
        return jax.vmap(lambda a, b, c, d, e, f: _one_view(a, b, c, d, e, f, grid, self_margin, mutual_margin))(
            uv_v, rng_v, ok_v, uv_k, rng_k, ok_k)

    box, front, occ, gap = jax.lax.map(frame, (verts, kpts), batch_size=frame_chunk)
    return Visibility(box=box, in_front=front, occluder=occ, depth_gap=gap)
