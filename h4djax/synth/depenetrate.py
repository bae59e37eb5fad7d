"""Final de-penetration of the synthetic ground truth (step 7 of `generate`).

The earlier steps keep the two people apart with proxies: arm-less bodies pushed apart (`_separate`), capsule arms
and forearm vertices checked during the contact IK. What the proxies miss (a shoulder pressed into the partner's
chest, a knee between the partner's legs, fingers through a forearm, a hip in a grappling clinch) is fixed here on
the real meshes, in rounds of

1. a forward pass of both people over all frames;
2. detection: every `stride`-th vertex of one person within the other's bounding box (+ `guard`) is tested against
   the other's whole mesh (winding number + exact point-triangle distance, `eval.metrics.winding_and_distance`).
   Vertices inside, or outside by less than `guard`, become constraints, linearized at the current pose: the
   outward normal n of the partner's surface at the nearest surface point c (the gradient of the signed distance),
   the partner's vertex u nearest to c and the offset e = c - u (carried rigidly with u);
3. one jitted Optax L-BFGS solve over all frames at once for small corrective rotations of every joint (composed onto
   the local rotations, root included) and horizontal shifts of each person, minimizing

       sum_k relu(margin - n_k . (v_k - u_k - e_k))^2 / (1 cm)^2      both people move: the relative position counts
     + w_reg  sum stiffness_j |dtheta_j|^2 / (0.1 rad)^2  +  |shift|^2 / (1 cm)^2 x shift_stiffness
     + w_vel  (first temporal differences of both)^2  +  w_acc (second differences)^2

   so the correction is small, spread over the joints by stiffness (pelvis and spine stiff, limbs free: a limb
   moves before the torso does), and smooth in time (the ground truth's motion gets no pops);

until the deepest vertex is within `tolerance` or the rounds run out. Shifts are horizontal only and vertices near
the floor are constrained to stay on or above it (`floor_constraints`), so the floor contact of `generate` holds.
Where a part went through a thin part of the partner (fingers through a forearm), the nearest exits of its vertices
point to opposite sides; `_consistent_sides` picks one side per part pair. Pose correctives (SMPL posedirs) are not
part of the linearized model; the next round's detection sees the real mesh.

Everything per round is batched over frames and constraints (no Python loop over frames, people or joints); the
padded shapes are rounded up to powers of two so a few compiled programs serve every round and sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.spatial import cKDTree

from h4djax.body import BodyModel
from h4djax.body.lbs import forward_kinematics, skinning_transforms
from h4djax.body.model import SMPL_JOINT_NAMES
from h4djax.eval.metrics import FaceClusters, winding_and_distance
from h4djax.geometry.rotations import axis_angle_to_matrix
from h4djax.synth.motion import aa_to_mat

__all__ = ["DepenetrationSettings", "JOINT_STIFFNESS", "depenetrate", "find_constraints"]

# Relative cost of rotating a joint (per radian^2): the trunk is stiff (a hug does not fold the spine), limbs are
# free; the solver then moves the lightest chain that clears the partner, as a person would.
JOINT_STIFFNESS = {
    "pelvis": 40.0, "spine1": 20.0, "spine2": 20.0, "spine3": 20.0, "neck": 6.0, "head": 2.0,
    "left_collar": 4.0, "right_collar": 4.0, "left_shoulder": 1.0, "right_shoulder": 1.0,
    "left_elbow": 1.0, "right_elbow": 1.0, "left_wrist": 0.7, "right_wrist": 0.7, "left_hand": 0.7,
    "right_hand": 0.7, "left_hip": 2.0, "right_hip": 2.0, "left_knee": 1.5, "right_knee": 1.5,
    "left_ankle": 1.5, "right_ankle": 1.5, "left_foot": 1.5, "right_foot": 1.5,
}
_ROT_UNIT = 0.1  # rad: the solver's rotation unit (the solver works in these units)
_LEN_UNIT = 0.01  # m: the solver's length unit


@dataclass(frozen=True)
class DepenetrationSettings:
    """Knobs of `depenetrate` (the generator fills them from `MotionConfig`)."""

    rounds: int = 8
    """Detect-and-solve rounds (0 = skip the step). Each soft solve removes only part of a deep, short-lived
    penetration (the smoothness terms resist a one-frame correction), so a forearm through the partner's upper arm
    takes several rounds: 66 -> 51 -> 35 -> 27 -> 22 -> 12 -> 2 mm on the demo hug (150 frames, seed 0)."""
    stride: int = 2
    """Every n-th vertex of each person is tested against the partner's mesh."""
    margin: float = 0.003
    """Gap (m) the solve asks for between a constrained vertex and the partner's surface."""
    guard: float = 0.006
    """Vertices outside the partner by less than this (m) are constrained too, so the correction does not push
    them in."""
    tolerance: float = 0.002
    """Stop when no tested vertex is deeper than this (m)."""
    steps: int = 150
    """L-BFGS iterations of each solve."""
    w_reg: float = 0.05
    """Weight of the correction size (per stiffness x (0.1 rad)^2)."""
    shift_stiffness: float = 4.0
    """Cost of a 1 cm horizontal shift of a whole person relative to a 0.1 rad rotation of a unit-stiffness joint."""
    fps: float = 30.0
    """Frame rate of the sequence: `w_vel` and `w_acc` are per frame at 30 fps and scale with (fps / 30)^2 and
    (fps / 30)^4 (penalties on the velocity and acceleration of the correction in time, not per frame index): at
    5 fps the 30-fps weights coupled frames 0.2 s apart as strongly as frames 33 ms apart, and a knee through the
    partner's thigh in the last second of a 6 s grappling take stayed at 60 mm after 8 rounds."""
    w_vel: float = 3.0
    """Weight of the first temporal difference of the correction at 30 fps (spreads it over ~sqrt(w_vel/w_reg)
    frames)."""
    w_acc: float = 30.0
    """Weight of the second temporal difference of the correction at 30 fps (no kinks in the corrected motion)."""
    max_travel: float = 0.1
    """A vertex through a thin part of the partner is pushed to the side most of its part is on; if that is farther
    than this (m), it is left to later rounds."""
    reach: float = 0.08
    """Vertices farther than this (m, a lower bound from the partner's face-cluster spheres) from the partner's
    surface are not tested: outside, or deeper inside than anything the earlier steps leave."""


def _pow2(n: int, lo: int = 8) -> int:
    return 1 << max(int(np.ceil(np.log2(max(n, 1)))), int(np.log2(lo)))


_CHUNK = 256  # points per query chunk (all from one frame)


def _cluster_bounds(mesh, clusters: FaceClusters):
    """Bounding spheres (centre f[C, 3], radius f[C]) of the face clusters of one posed mesh f[V, 3]."""
    tri = mesh[clusters.faces]  # [C, S, corner, 3]
    cen = jnp.mean(tri, axis=(1, 2))
    rad = jnp.max(jnp.linalg.norm(tri - cen[:, None, None], axis=-1), axis=(1, 2))
    return cen, rad


@jax.jit
def _gap_lower_bound(points, meshes, clusters: FaceClusters):
    """Per chunk (points f[n, B, 3] against that chunk's mesh f[n, V, 3]): a lower bound (m) of every point's
    distance to the mesh surface (distance to the nearest cluster's bounding sphere); it bounds the depth of an
    inside point too, so points beyond `reach` are neither near nor deeply inside."""

    def one(x):
        p, v = x
        cen, rad = _cluster_bounds(v, clusters)
        d2 = jnp.sum(p * p, -1)[:, None] - 2.0 * p @ cen.T + jnp.sum(cen * cen, -1)[None]
        return jnp.min(jnp.sqrt(jnp.maximum(d2, 0.0)) - rad[None], axis=1)

    return jax.lax.map(one, (points, meshes))


@jax.jit
def _signed_distance(points, meshes, clusters: FaceClusters):
    """Signed distance (m, negative inside) of point chunks f[n, B, 3] to their meshes f[n, V, 3]."""

    def one(x):
        p, v = x
        w, d = winding_and_distance(p, v, clusters, near_clusters=8)
        return jnp.where(jnp.abs(w) > 0.5, -d, d)

    return jax.lax.map(one, (points, meshes))


@jax.jit
def _linearize(points, meshes, clusters: FaceClusters):
    """For point chunks f[n, B, 3] near their meshes f[n, V, 3]: signed distance s [n, B], outward unit normal of the
    surface at the nearest point [n, B, 3] (the gradient of s), the mesh vertex nearest to that surface point
    [n, B] and the offset from that vertex to the surface point [n, B, 3]."""

    def one(x):
        p, v = x

        def sd(q):
            w, d = winding_and_distance(q, v, clusters, near_clusters=8)
            return jnp.where(jnp.abs(w) > 0.5, -d, d)

        s, vjp = jax.vjp(sd, p)
        (g,) = vjp(jnp.ones_like(s))
        n = g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-9)
        c = p - s[:, None] * n  # nearest surface point
        d2 = jnp.sum(c * c, -1)[:, None] - 2.0 * c @ v.T + jnp.sum(v * v, -1)[None]
        u = jnp.argmin(d2, axis=1)
        return s, n, u, c - v[u]

    return jax.lax.map(one, (points, meshes))


_BATCH = 32  # chunks per call: one compiled shape per query function, whatever the number of points


def _query(fn, frame, vertex, points_of, meshes, clusters):
    """Run a per-point query `fn` on flat (frame, vertex) pairs (sorted by frame), in chunks of `_CHUNK` points of
    one frame each, `_BATCH` chunks per call (one compiled shape whatever the sequence length); results come back in
    flat order. points_of: [F, V, 3] the queried person's vertices; meshes: [F, V, 3] the other person's."""
    starts = np.flatnonzero(np.r_[True, frame[1:] != frame[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    per = -(-(ends - starts) // _CHUNK)
    n = -(-int(per.sum()) // _BATCH) * _BATCH
    slot = np.full((n, _CHUNK), -1, np.int64)
    cf = np.full(n, frame[0], np.int32)
    first = np.r_[0, np.cumsum(per)[:-1]]
    run = np.repeat(np.arange(len(starts)), ends - starts)
    pos = np.arange(len(frame)) - starts[run]  # position within its frame's run
    ch = first[run] + pos // _CHUNK
    slot[ch, pos % _CHUNK] = np.arange(len(frame))
    cf[ch] = frame
    idx = np.maximum(slot, 0)
    pts = points_of[frame[idx], vertex[idx]].astype(np.float32)  # [n, B, 3]
    outs = [fn(jnp.asarray(pts[i:i + _BATCH]), jnp.asarray(meshes[cf[i:i + _BATCH]], jnp.float32), clusters)
            for i in range(0, n, _BATCH)]  # dispatched asynchronously, gathered below
    m = slot >= 0
    res = []
    for k in range(len(outs[0]) if isinstance(outs[0], tuple) else 1):
        o = np.concatenate([np.asarray(x[k] if isinstance(x, tuple) else x) for x in outs])
        flat = np.empty((len(frame),) + o.shape[2:], o.dtype)
        flat[slot[m]] = o[m]
        res.append(flat)
    return res


@dataclass
class Constraints:
    """Linearized non-penetration constraints (flat; `valid` marks the real ones, the rest is padding).

    person: i[n] whose vertex; frame: i[n]; vertex: i[n] that person's vertex; anchor: i[n] the partner's vertex
    nearest to the contact point; normal: f[n, 3] the partner's outward surface normal; offset: f[n, 3] anchor vertex
    -> surface point (m); depth: f[n] how deep the vertex is inside (m, negative = outside)."""

    person: np.ndarray
    frame: np.ndarray
    vertex: np.ndarray
    anchor: np.ndarray
    normal: np.ndarray
    offset: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    floor: np.ndarray | None = None  # bool[n]: a floor constraint (vertex height >= 0; anchor unused)

    def __post_init__(self):
        if self.floor is None:
            self.floor = np.zeros(len(self.frame), bool)

    def select(self, keep: np.ndarray) -> "Constraints":
        return Constraints(**{k: getattr(self, k)[keep] for k in _FIELDS})

    @staticmethod
    def concat(parts: list["Constraints"]) -> "Constraints":
        return Constraints(**{k: np.concatenate([getattr(c, k) for c in parts]) for k in _FIELDS})

    def padded(self) -> "Constraints":
        """Real constraints first, padded to a power of two (a few compiled solve shapes)."""
        c = self.select(self.valid)
        n = len(c.frame)
        m = _pow2(n, 1024)
        return Constraints(**{k: np.concatenate([getattr(c, k), np.zeros((m - n,) + getattr(c, k).shape[1:],
                                                                         getattr(c, k).dtype)]) for k in _FIELDS})


_FIELDS = ("person", "frame", "vertex", "anchor", "normal", "offset", "depth", "valid", "floor")


def floor_constraints(verts: np.ndarray, stride: int, guard: float) -> Constraints:
    """Every `stride`-th vertex lower than `guard` above the floor (y = 0) must stay at or above it: the correction
    must not push a foot (or a person lying down) into the floor. verts: f[2, F, V, 3]."""
    sub = np.arange(0, verts.shape[2], max(1, stride))
    p, f, i = np.nonzero(verts[:, :, sub, 1] < guard)
    n = len(p)
    return Constraints(person=p, frame=f, vertex=sub[i], anchor=np.zeros(n, np.int64),
                       normal=np.tile(np.float32([0.0, 1.0, 0.0]), (n, 1)), offset=np.zeros((n, 3), np.float32),
                       depth=-verts[p, f, sub[i], 1].astype(np.float32), valid=np.ones(n, bool),
                       floor=np.ones(n, bool))


def _consistent_sides(c: Constraints, part: np.ndarray, verts: np.ndarray, max_travel: float) -> Constraints:
    """One exit side per body-part pair. Where a part has gone through a thin part of the partner (fingers through a
    forearm), the nearest exits of its vertices point to opposite sides and no small correction satisfies both.
    Per (frame, this vertex's part, the partner's part) the depth-weighted mean normal m picks the side; a vertex
    whose own normal opposes m is constrained instead to clear, along m, the nearest contact point of the group on
    direction (the partner part's surface on the chosen side), nearest first. part: i[V] the dominant skinning joint of each vertex;
    verts: f[2, F, V, 3] the posed meshes the constraints were found on."""
    key = (c.frame.astype(np.int64) * 64 + part[c.vertex]) * 64 + part[c.anchor]
    _, g = np.unique(key, return_inverse=True)
    m = np.zeros((g.max() + 1, 3))
    np.add.at(m, g, np.maximum(c.depth, 0.0)[:, None] * c.normal)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    d = m[g]  # [n, 3]
    wrong = np.sum(c.normal * d, -1) < 0.0
    if not wrong.any():
        return c
    contact = verts[1 - c.person, c.frame, c.anchor] + c.offset  # surface points
    v = verts[c.person, c.frame, c.vertex]
    right = np.flatnonzero(~wrong)
    # Nearest right-side contact of the same group: the group id as a 4th coordinate 1 km apart keeps the k-d tree
    # search inside the group.
    tree = cKDTree(np.c_[contact[right], 1000.0 * g[right]])
    _, nn = tree.query(np.c_[v, 1000.0 * g][wrong])
    b = np.arange(len(g))
    b[wrong] = right[nn]
    travel = np.sum(d * (contact[b] - v), -1)
    normal = np.where(wrong[:, None], d, c.normal).astype(np.float32)
    anchor = np.where(wrong, c.anchor[b], c.anchor)
    offset = np.where(wrong[:, None], c.offset[b], c.offset)
    # A vertex that would have to travel farther than `max_travel` to the chosen side is left to the next round
    # (the rest of its part moving out usually drags it along).
    keep = ~wrong | (travel < max_travel)
    return Constraints(person=c.person[keep], frame=c.frame[keep], vertex=c.vertex[keep], anchor=anchor[keep],
                       normal=normal[keep], offset=offset[keep], depth=c.depth[keep], valid=c.valid[keep])


def find_constraints(verts: np.ndarray, clusters: FaceClusters, settings: DepenetrationSettings,
                     test: np.ndarray | None = None, part: np.ndarray | None = None) -> tuple[Constraints, np.ndarray]:
    """Detection (module docstring, step 2) for two people. verts: f[2, F, V, 3] posed meshes (m); test: bool[2, F,
    S] which of the tested vertices (every `stride`-th) to test (default all).

    Stages, each on the survivors of the previous: the partner's bounding box (+ guard), a lower bound of the
    distance from the partner's face-cluster spheres (< `reach`), the exact signed distance (< `guard`), then the
    linearization. Returns the constraints and, for every tested vertex, a lower bound of its clearance (m) from the
    partner's surface (the exact signed distance where computed; NaN where not tested), which lets the next round
    skip vertices that cannot have come within `guard` (`depenetrate`)."""
    st = settings
    F, V = verts.shape[1], verts.shape[2]
    sub = np.arange(0, V, max(1, st.stride))
    test = np.ones((2, F, len(sub)), bool) if test is None else test
    clear = np.full((2, F, len(sub)), np.nan)
    parts = []
    for p in (0, 1):  # the two directions (person p's vertices against person q's mesh)
        q = 1 - p
        lo = verts[q].min(1)[:, None]
        hi = verts[q].max(1)[:, None]  # [F, 1, 3]
        x = verts[p][:, sub]  # [F, S, 3]
        box = np.linalg.norm(np.maximum(np.maximum(lo - x, x - hi), 0.0), axis=-1)  # distance to the box
        clear[p] = np.where(test[p], box, np.nan)
        fi, si = np.nonzero(test[p] & (box < st.guard))
        if fi.size == 0:
            continue
        meshes = verts[q]
        (lb,) = _query(_gap_lower_bound, fi, sub[si], verts[p], meshes, clusters)
        clear[p, fi, si] = np.maximum(lb, box[fi, si])
        near = lb < max(st.reach, st.guard)
        fi, si = fi[near], si[near]
        if fi.size == 0:
            continue
        (sd,) = _query(_signed_distance, fi, sub[si], verts[p], meshes, clusters)
        clear[p, fi, si] = sd
        sel = sd < st.guard
        fi, si = fi[sel], si[sel]
        if fi.size == 0:
            continue
        s2, n2, u2, e2 = _query(_linearize, fi, sub[si], verts[p], meshes, clusters)
        parts.append(Constraints(person=np.full(len(fi), p), frame=fi, vertex=sub[si], anchor=u2.astype(np.int64),
                                 normal=n2, offset=e2, depth=-s2, valid=np.ones(len(fi), bool)))
    if part is not None and parts:
        parts = [_consistent_sides(c, part, verts, st.max_travel) for c in parts]
    if not parts:
        z = np.zeros(0, np.int64)
        return Constraints(person=z, frame=z, vertex=z, anchor=z, normal=np.zeros((0, 3), np.float32),
                           offset=np.zeros((0, 3), np.float32), depth=np.zeros(0, np.float32),
                           valid=np.zeros(0, bool)), clear
    return Constraints.concat(parts), clear


@partial(jax.jit, static_argnames=("parents", "steps"))
def _solve(base_rot, rest, v_shaped, weights, transl, person, frame, vertex, anchor, normal, offset, valid,
           floor, stiffness, knobs, parents: tuple, steps: int):
    """The correction solve (module docstring, step 3). base_rot f[2, F, J, 3, 3], rest f[2, J, 3], v_shaped
    f[2, V, 3] (shaped rest vertices), weights f[V, J], transl f[2, F, 3]; constraints flat [n]; knobs = (margin,
    w_reg, shift_stiffness, w_vel, w_acc). Returns (dtheta f[2, F, J, 3] rad, shift f[2, F, 3] m, max remaining
    violation m)."""
    margin, w_reg, k_shift, w_vel, w_acc = (knobs[i] for i in range(5))
    P, F, J = base_rot.shape[:3]
    other = 1 - person

    def positions(x):
        rot = base_rot @ axis_angle_to_matrix(_ROT_UNIT * x["rot"])
        wR, wt = jax.vmap(jax.vmap(forward_kinematics, (0, None, None)), (0, 0, None))(rot, rest, parents)
        A = jax.vmap(jax.vmap(skinning_transforms, (0, 0, None)), (0, 0, 0))(wR, wt, rest)  # [2, F, J, 12]
        sh = _LEN_UNIT * jnp.stack([x["shift"][..., 0], jnp.zeros_like(x["shift"][..., 0]), x["shift"][..., 1]], -1)

        def vertex_at(who, vid):
            T = jnp.einsum("nj,njc->nc", weights[vid], A[who, frame])  # [n, 12]
            v = v_shaped[who, vid]
            R = T[:, :9].reshape(-1, 3, 3)
            return jnp.einsum("nij,nj->ni", R, v) + T[:, 9:] + transl[who, frame] + sh[who, frame]

        return vertex_at(person, vertex), vertex_at(other, anchor)

    def violation(x):
        v, u = positions(x)
        u = jnp.where(floor[:, None], 0.0, u)  # floor constraints: the height itself, no margin
        return jnp.where(valid, jnp.where(floor, 0.0, margin) - jnp.sum(normal * (v - u - offset), -1), -jnp.inf)

    stiff = jnp.concatenate([stiffness, jnp.array([k_shift])])  # rotation joints + the shift

    def loss(x):
        viol = violation(x)
        data = jnp.sum(jnp.square(jnp.maximum(viol, 0.0) / _LEN_UNIT))
        z = jnp.concatenate([x["rot"], jnp.pad(x["shift"], ((0, 0), (0, 0), (0, 1)))[:, :, None]], 2)  # [2,F,J+1,3]
        wj = stiff[None, None, :, None]
        reg = w_reg * jnp.sum(wj * z * z)
        d1 = jnp.diff(z, axis=1)
        d2 = jnp.diff(z, n=2, axis=1)
        return data + reg + w_vel * jnp.sum(wj * d1 * d1) + w_acc * jnp.sum(wj * d2 * d2)

    x0 = {"rot": jnp.zeros((P, F, J, 3), base_rot.dtype), "shift": jnp.zeros((P, F, 2), base_rot.dtype)}
    # L-BFGS (zoom line search): the problem is badly conditioned (lever arms from 2 cm to 1 m, stiffnesses 0.7-8,
    # temporal coupling), where Adam needs thousands of steps.
    opt = optax.lbfgs(memory_size=20)
    state = opt.init(x0)
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        x, s = carry
        value, g = value_and_grad(x, state=s)
        upd, s = opt.update(g, s, x, value=value, grad=g, value_fn=loss)
        return (optax.apply_updates(x, upd), s), None

    (x, _), _ = jax.lax.scan(step, (x0, state), None, length=steps)
    sh = _LEN_UNIT * jnp.stack([x["shift"][..., 0], jnp.zeros_like(x["shift"][..., 0]), x["shift"][..., 1]], -1)
    return _ROT_UNIT * x["rot"], sh, violation(x) - margin


def depenetrate(model: BodyModel, clusters: FaceClusters, rot: np.ndarray, betas: np.ndarray, transl: np.ndarray,
                forward: Callable[[np.ndarray, np.ndarray], np.ndarray], settings: DepenetrationSettings,
                progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rounds of detection and correction (module docstring) for people 0 and 1.

    rot: f64[2, F, J, 3, 3] local joint rotations; betas: [2, betas]; transl: [2, F, 3] (m); forward(rot, transl)
    -> posed vertices f[2, F, V, 3]. Returns (corrected rot, corrected transl, stats with the deepest tested vertex
    (mm) before every round and after the last, and the constraint counts)."""
    st = settings
    rot = np.array(rot, np.float64)
    transl = np.array(transl, np.float64)
    names = [SMPL_JOINT_NAMES[j] if j < len(SMPL_JOINT_NAMES) else "" for j in range(rot.shape[2])]
    stiffness = jnp.asarray([JOINT_STIFFNESS.get(n, 2.0) for n in names], jnp.float32)
    rest = np.asarray(model.J_template, np.float64)[None] + np.einsum("jcb,pb->pjc", np.asarray(model.J_shapedirs,
                                                                                              np.float64), betas)
    v_shaped = np.asarray(model.v_template, np.float64)[None] + np.einsum(
        "vcb,pb->pvc", np.asarray(model.shapedirs, np.float64), betas)
    rate = st.fps / 30.0
    knobs = jnp.asarray([st.margin, st.w_reg, st.shift_stiffness, st.w_vel * rate ** 2, st.w_acc * rate ** 4],
                        jnp.float32)
    depth_mm: list[float] = []
    counts: list[int] = []
    verts = forward(rot, transl)
    part = np.argmax(np.asarray(model.weights), 1)  # dominant skinning joint of every vertex
    c, clear = find_constraints(verts, clusters, st, part=part)
    sub = np.arange(0, verts.shape[2], max(1, st.stride))
    F = rot.shape[1]
    for r in range(st.rounds + 1):
        c = Constraints.concat([c.select(~c.floor), floor_constraints(verts, st.stride, st.guard)])
        deepest = float(c.depth.max()) if len(c.depth) else 0.0
        depth_mm.append(round(1000 * max(deepest, 0.0), 2))
        if r == st.rounds or deepest <= st.tolerance:
            break
        counts.append(len(c.frame))
        if progress:
            fl = c.depth[c.floor].max() if c.floor.any() else 0.0
            pp = c.depth[~c.floor].max() if (~c.floor).any() else 0.0
            worst = int(np.argmax(np.where(c.floor, -np.inf, c.depth))) if (~c.floor).any() else 0
            progress(f"round {r + 1}: deepest {1000 * deepest:.1f} mm (people {1000 * pp:.1f} at frame "
                     f"{c.frame[worst]} person {c.person[worst]} vertex {c.vertex[worst]}, floor {1000 * fl:.1f}), "
                     f"{counts[-1]} constraints")
        # Constraints padded to the next power of two: the later rounds hold a fraction of the first round's
        # constraints, and a solve on their own (smaller) shape costs one more compile (~7 s) but runs ~5x faster
        # than on the first round's padding (measured on the 150-frame demo hug: 6.5 s -> 1.2 s per round).
        cp = c.padded()
        # Frames padded to a multiple of 32 (the last frame repeated, no constraints there): one compiled solve
        # serves sequences of similar length.
        fp = -(-F // 32) * 32
        rot_p = np.concatenate([rot, np.repeat(rot[:, -1:], fp - F, 1)], 1)
        tr_p = np.concatenate([transl, np.repeat(transl[:, -1:], fp - F, 1)], 1)
        dth, sh, _ = _solve(jnp.asarray(rot_p, jnp.float32), jnp.asarray(rest, jnp.float32),
                            jnp.asarray(v_shaped, jnp.float32), model.weights.astype(jnp.float32),
                            jnp.asarray(tr_p, jnp.float32), jnp.asarray(cp.person), jnp.asarray(cp.frame),
                            jnp.asarray(cp.vertex), jnp.asarray(cp.anchor), jnp.asarray(cp.normal, jnp.float32),
                            jnp.asarray(cp.offset, jnp.float32), jnp.asarray(cp.valid), jnp.asarray(cp.floor),
                            stiffness, knobs,
                            parents=tuple(int(p) for p in model.parents), steps=st.steps)
        rot = rot @ aa_to_mat(np.asarray(dth, np.float64)[:, :F])
        transl = transl + np.asarray(sh, np.float64)[:, :F]
        old, verts = verts, forward(rot, transl)
        # Incremental re-test: a vertex's distance to the partner's surface changes by at most its own displacement
        # plus the largest vertex displacement of the partner (same topology, piecewise linear), so a vertex whose
        # clearance minus that bound stays above `guard` cannot have become a constraint.
        move = np.linalg.norm(verts - old, axis=-1)  # [2, F, V]
        bound = np.nan_to_num(clear, nan=-np.inf) - move[:, :, sub] - move.max(2)[::-1, :, None]
        moved = move[:, :, sub] + move.max(2)[::-1, :, None] > 1e-5
        test = (bound < st.guard) & moved
        keep = ~test[c.person, c.frame, c.vertex // max(1, st.stride)]
        c_new, clear_new = find_constraints(verts, clusters, st, test, part)
        clear = np.where(test, clear_new, np.maximum(bound, st.guard))
        c = Constraints.concat([c.select(keep), c_new])
    stats = {"rounds": len(counts), "max_depth_mm": depth_mm, "constraints": counts}
    return rot, transl, stats
