"""Synthetic capture generation: rig + scripted interaction + body model + detector noise -> capture directory.

Pipeline (`generate`), every step vectorized over frames (no Python loop over frames):

1. rig (`rig.make_rig`) and body shapes (betas ~ N(0, betas_std), clipped);
2. the scenario script (`scenarios.SCENARIOS`): keyframes per person; a random smooth time warp shared by all
   people (timing jitter), random per-keyframe joint perturbations (pose jitter), a slow continuous sway;
3. C1 quaternion-spline interpolation of every joint at the frame times (`motion.interpolate_rotations`);
4. forward pass 1 of the body model -> floor contact (lowest vertex on y = 0 in every frame);
5. separation on every `separation_stride`-th frame (batched): bodies without their arms (legs included) are
   pulled together to touch where the script asks for a two-handed contact, then pushed apart along the line
   between their torsos until no vertex of one lies inside the other (winding numbers,
   `eval.metrics.winding_and_distance`); offsets are interpolated linearly in between;
6. hand contacts: analytic two-bone IK of shoulder-elbow-wrist to targets on the partner's posed skin (palm
   `contact_clearance` off the skin, hand flat along the surface, palm turned towards it; a target out of the arm's
   reach slides along the contact's fallback anchors, `_reachable_targets`), blended in by the
   keyframed contact weights. Each contact arm, as actually posed (keyframed arm slerped towards the IK solution by
   the weight), is checked as a capsule proxy from shoulder to fingertips against the partner's arm-less body and
   the partner's arms: elbow swivel search, palm lift rounds, contact weights raised (or, last resort, lowered)
   where the blend path enters the partner, then `verify_rounds` lift rounds checked on the posed meshes
   (forearm and hand vertices against the partner's whole mesh);
7. forward pass 2 -> ground-truth keypoints (the model's COCO-17 regressor), mesh; people the separation did not
   shift vertically are put back onto the floor (the IK may have moved their lowest point);
8. de-penetration on the real meshes (`synth.depenetrate`, `depenetrate_rounds` rounds): every vertex of one person
   inside the other (or within `depenetrate_guard` of its skin, or of the floor) becomes a linearized constraint of
   one smooth correction of all joints (trunk stiff, limbs free) and horizontal shifts over all frames (L-BFGS),
   then the floor contact rule again;
9. visibility of every keypoint in every camera (`visibility.keypoint_visibility`) and the detector noise model
   (`noise.apply_detector_noise`);
10. measured ground-truth interpenetration between the people (`eval.metrics.interpenetration`).

Steps 1-8 run at `MotionConfig.sim_fps` or more (a multiple of the output frame rate) and are subsampled to the
output frame rate before step 9.

Randomness: independent streams per concern spawned from one seed (`numpy.random.SeedSequence`), so changing the
noise settings does not change the motion. Same seed and config -> same bytes on disk (`write_synth_capture`).
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

from h4djax.body import BodyModel, SmplParams, load_body_model, smpl_forward_batch
from h4djax.errors import ConfigError
from h4djax.eval.metrics import FaceClusters, cluster_faces, interpenetration, winding_and_distance
from h4djax.geometry import Cameras, project, to_jax
from h4djax.synth.config import SynthConfig, to_dict
from h4djax.synth.depenetrate import DepenetrationSettings, depenetrate
from h4djax.synth.motion import (
    aa_to_mat, aa_to_quat, global_rotations, interpolate_positions, interpolate_rotations, mat_to_aa, quat_to_mat,
    rotation_between, slerp, mat_to_quat, two_bone_ik,
)
from h4djax.synth.noise import NOISE_LABELS, apply_detector_noise
from h4djax.synth.rig import make_rig
from h4djax.synth.scenarios import ANCHORS, SCENARIOS, Anchor, Script, bystander_keys, pose_rotvecs
from h4djax.synth.visibility import keypoint_visibility

__all__ = ["SynthCapture", "generate", "write_synth_capture", "BodyTopology", "body_topology"]

JOINT_SET = "coco17"
_ARM_JOINTS = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_hand", "right_hand")
_SIDE_IDX = {"left": dict(collar=13, shoulder=16, elbow=18, wrist=20, hand=22, sign=1.0),
             "right": dict(collar=14, shoulder=17, elbow=19, wrist=21, hand=23, sign=-1.0)}
_PALM_OFFSET = 0.025  # wrist joint centre to palm skin (m), so a clearance is measured from the skin
_SPINE3 = 9
_MAX_LIFT = 0.12  # at most this much extra palm clearance (m) from the contact check


@dataclass
class SynthCapture:
    """Everything `generate` produces (host numpy arrays).

    cameras: host Cameras. keypoints: f32[frames, cams, people, 17, 3] noisy detections. clean: f32[frames, cams,
    people, 17, 2] exact projections of the ground truth. labels: i8[frames, cams, people, 17] noise effect per
    keypoint (`noise.NOISE_LABELS`). joints3d: f32[frames, people, 17, 3] ground-truth keypoints (m).
    global_orient, body_pose, betas, transl: SMPL-layout parameters. stats: measured numbers (timings,
    interpenetration, noise rates) for reports.
    """

    cameras: Cameras
    keypoints: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    joints3d: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    fps: float
    config: SynthConfig
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BodyTopology:
    """Per-model host data the generator derives once: torso-only faces (no arm vertices) and their clusters,
    full-mesh clusters, and the vertex index of every skin anchor with its adjacent faces (for normals)."""

    arm_vertex: np.ndarray
    torso_faces: np.ndarray
    torso_clusters: FaceClusters
    clusters: FaceClusters
    anchor_vertex: dict[str, int]
    anchor_faces: np.ndarray  # [anchors, max_adjacent] face indices, -1 padded
    anchor_names: tuple[str, ...]
    forearm_vertex: dict = field(default_factory=dict)  # side -> every 3rd vertex skinned to elbow/wrist/hand


def _anchor_vertex(model_np: dict, a: Anchor) -> int:
    v = model_np["v_template"]
    J = model_np["J_template"]
    dom = np.argmax(model_np["weights"], 1)
    from h4djax.body.model import SMPL_JOINT_NAMES

    allowed = np.isin(dom, [SMPL_JOINT_NAMES.index(n) for n in a.joints])
    j = J[SMPL_JOINT_NAMES.index(a.joint)]
    band = np.abs(v[:, 1] - (j[1] + a.dy)) < a.band
    cand = np.flatnonzero(allowed & band)
    if cand.size == 0:
        cand = np.flatnonzero(allowed)
    d = np.asarray(a.direction, float)
    d = d / np.linalg.norm(d)
    rel = v[cand] - j
    # Farthest along the direction, among points roughly in that direction from the joint.
    score = rel @ d - 0.5 * np.linalg.norm(rel - np.outer(rel @ d, d), axis=1)
    return int(cand[np.argmax(score)])


_TOPOLOGY_CACHE: dict[str, BodyTopology] = {}


def body_topology(model: BodyModel) -> BodyTopology:
    """Derived host data of `model` (cached per model sha256/name)."""
    key = model.sha256 or model.name or str(id(model))
    if key in _TOPOLOGY_CACHE:
        return _TOPOLOGY_CACHE[key]
    from h4djax.body.model import SMPL_JOINT_NAMES

    m = {k: np.asarray(getattr(model, k), np.float64) for k in ("v_template", "J_template", "weights")}
    faces = np.asarray(model.faces, np.int64)
    dom = np.argmax(m["weights"], 1)
    # "Arm" = what contact IK moves: forearm and hand, and the upper arm beyond the deltoid (10 cm from the
    # shoulder joint); the deltoid stays with the torso for the separation test, as it hardly moves with the arm.
    arm_ids = [SMPL_JOINT_NAMES.index(n) for n in _ARM_JOINTS]
    arm_vertex = np.isin(dom, arm_ids)
    for side in ("left", "right"):
        j = SMPL_JOINT_NAMES.index(f"{side}_shoulder")
        near = np.linalg.norm(m["v_template"] - m["J_template"][j], axis=1) < 0.10
        arm_vertex &= ~((dom == j) & near)
    torso_faces = faces[~arm_vertex[faces].any(1)]
    names = tuple(sorted(ANCHORS))
    av = {n: _anchor_vertex(m, ANCHORS[n]) for n in names}
    adj = [np.flatnonzero((faces == av[n]).any(1)) for n in names]
    width = max(len(a) for a in adj)
    af = np.full((len(names), width), -1, np.int64)
    for i, a in enumerate(adj):
        af[i, : len(a)] = a
    topo = BodyTopology(
        arm_vertex=arm_vertex, torso_faces=torso_faces,
        torso_clusters=cluster_faces(torso_faces, m["v_template"]), clusters=cluster_faces(faces, m["v_template"]),
        anchor_vertex=av, anchor_faces=af, anchor_names=names,
        forearm_vertex={side: np.flatnonzero(np.isin(dom, [SMPL_JOINT_NAMES.index(f"{side}_{n}")
                                                           for n in ("elbow", "wrist", "hand")]))[::3]
                        for side in ("left", "right")},
    )
    _TOPOLOGY_CACHE[key] = topo
    return topo


# ---------------------------------------------------------------------------------------------------------------
# Motion assembly
# ---------------------------------------------------------------------------------------------------------------


def _time_warp(n: int, fps: float, tempo: float, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Script times (s) of the frames: t * tempo plus a smooth random warp (a few slow sinusoids) whose slope stays
    within +-jitter, shared by all people so their interaction stays synchronized."""
    t = np.arange(n) / fps * tempo
    if jitter <= 0:
        return t
    freqs = rng.uniform(0.05, 0.25, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    amps = jitter / (2 * np.pi * freqs * 3)  # each term's slope amplitude = jitter / 3
    return t + np.sum(amps * np.sin(2 * np.pi * freqs * t[:, None] + phases), -1)


def _sway(n: int, t: np.ndarray, amp_deg: float, rng: np.random.Generator) -> np.ndarray:
    """[frames, 24, 3] slow sway rotation vectors on spine, neck, head and collars (sums of sinusoids)."""
    out = np.zeros((n, 24, 3))
    joints = np.array([3, 6, 9, 12, 15, 13, 14])
    f = rng.uniform(0.08, 0.4, (len(joints), 3, 2))
    ph = rng.uniform(0, 2 * np.pi, (len(joints), 3, 2))
    a = np.deg2rad(amp_deg) * rng.uniform(0.3, 1.0, (len(joints), 3, 2))
    out[:, joints] = np.sum(a * np.sin(2 * np.pi * f * t[:, None, None, None] + ph), -1)
    return out


@dataclass
class _Track:
    """Interpolated motion of one person: local rotation matrices, root floor position, contacts per hand."""

    rot: np.ndarray  # [F, 24, 3, 3]
    root_xz: np.ndarray  # [F, 2]
    key_times: np.ndarray
    contact_w: dict  # side -> [F]
    contact_a: dict  # side -> (anchor name at segment start [F], at segment end [F], blend [F])
    contact_clear: dict  # side -> [F]
    contact_pole: dict  # side -> [F, 3]
    contact_fallback: dict = field(default_factory=dict)  # side -> {anchor: fallback anchors (Contact.fallback)}


def _interpolate_track(keys, times, mode: str, jitter_deg: float, sway: np.ndarray, rng) -> _Track:
    kt = np.array([k[0] for k in keys])
    poses = [k[1] for k in keys]
    rv = np.stack([pose_rotvecs(p) for p in poses])  # [n, 24, 3]
    # Pose jitter: a small random rotation composed onto every body joint of every keyframe.
    if jitter_deg > 0:
        jit = np.deg2rad(jitter_deg) * rng.standard_normal(rv.shape)
        jit[:, 0] = 0.0
        rv = mat_to_aa(aa_to_mat(rv) @ aa_to_mat(jit))
    q = interpolate_rotations(kt, aa_to_quat(rv), times, mode)  # [F, 24, 4]
    rot = quat_to_mat(q) @ aa_to_mat(sway)
    root = interpolate_positions(kt, np.array([p.root for p in poses]), times, mode)
    cw, ca, cc, cp, cf = {}, {}, {}, {}, {}
    i = np.clip(np.searchsorted(kt, np.clip(times, kt[0], kt[-1]), side="right") - 1, 0, max(len(kt) - 2, 0))
    j = np.minimum(i + 1, len(kt) - 1)
    u = np.clip((times - kt[i]) / np.maximum(kt[j] - kt[i], 1e-9), 0, 1)
    u = u * u * (3 - 2 * u)
    for side in ("left", "right"):
        cons = [p.contacts.get(side) for p in poses]
        w = np.array([c.weight if c is not None else 0.0 for c in cons])
        cw[side] = np.clip(interpolate_positions(kt, w[:, None], times, "slerp")[:, 0], 0.0, 1.0)
        names = np.array([c.anchor if c is not None else "" for c in cons], dtype=object)
        # Where one end of a segment has no contact, hold the other end's target (the weight fades instead).
        a0, a1 = names[i].copy(), names[j].copy()
        a0 = np.where(a0 == "", a1, a0)
        a1 = np.where(a1 == "", a0, a1)
        ca[side] = (a0, a1, u)
        clear = np.array([c.clearance if c is not None else 0.0 for c in cons])
        cc[side] = clear[i] * (1 - u) + clear[j] * u
        pole = np.array([c.pole if c is not None else (1.0, -0.6, -0.3) for c in cons], float)
        cp[side] = pole[i] * (1 - u[:, None]) + pole[j] * u[:, None]
        cf[side] = {c.anchor: c.fallback for c in cons if c is not None and c.fallback}
    return _Track(rot=rot, root_xz=root, key_times=kt, contact_w=cw, contact_a=ca, contact_clear=cc,
                  contact_pole=cp, contact_fallback=cf)


def _params_from(tracks: list[_Track], rest_pelvis: np.ndarray, betas: np.ndarray, y: np.ndarray | None = None,
                 offsets: np.ndarray | None = None):
    """SMPL params [P, F, ...] (float64 numpy) from tracks; pelvis on the given floor position, height `y`."""
    P = len(tracks)
    F = tracks[0].rot.shape[0]
    rv = np.stack([mat_to_aa(t.rot) for t in tracks])  # [P, F, 24, 3]
    transl = np.zeros((P, F, 3))
    for p, t in enumerate(tracks):  # loop over people (2-4), each vectorized over frames
        transl[p, :, 0] = t.root_xz[:, 0] - rest_pelvis[p, 0]
        transl[p, :, 2] = t.root_xz[:, 1] - rest_pelvis[p, 2]
    if y is not None:
        transl[..., 1] = y
    if offsets is not None:
        transl += offsets
    return rv, transl


def _forward(model: BodyModel, rv: np.ndarray, betas: np.ndarray, transl: np.ndarray, chunk: int = 40):
    """Full forward pass for [P, F] person-frames in chunks of frames (bounded memory). Returns numpy
    (vertices f32 [P, F, V, 3], joints f32 [P, F, 24, 3], keypoints f32 [P, F, K, 3])."""
    P, F = rv.shape[:2]
    n = -(-F // chunk)
    pad = n * chunk - F

    def prep(a):  # [P, F, ...] -> [n, P, chunk, ...] float32
        a = np.concatenate([a, np.repeat(a[:, -1:], pad, 1)], 1) if pad else a
        return jnp.asarray(np.moveaxis(a.reshape((P, n, chunk) + a.shape[2:]), 1, 0), jnp.float32)

    go = prep(rv[..., 0, :])
    bp = prep(rv[..., 1:, :].reshape(P, F, 69))
    tr = prep(transl)
    v, j, k = _forward_chunks(model, go, bp, jnp.asarray(betas, jnp.float32), tr)

    def back(a):  # [n, P, chunk, ...] -> [P, F, ...]
        a = np.moveaxis(np.array(a), 0, 1)  # a writable copy: callers shift the vertices in place
        return a.reshape((P, n * chunk) + a.shape[3:])[:, :F]

    return back(v), back(j), back(k)


@jax.jit
def _forward_chunks(model: BodyModel, go, bp, betas, tr):
    def one(x):
        out = smpl_forward_batch(model, SmplParams(global_orient=x[0], body_pose=x[1], betas=betas, transl=x[2]))
        return out.vertices, out.joints, out.keypoints

    return jax.lax.map(one, (go, bp, tr))


def _vertex_normals(verts: np.ndarray, faces: np.ndarray, face_ids: np.ndarray) -> np.ndarray:
    """Area-weighted normals [..., anchors, 3] at anchor vertices from their adjacent faces (-1 padded)."""
    fi = np.maximum(face_ids, 0)
    tri = verts[..., faces[fi], :]  # [..., A, W, 3, 3]
    n = np.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    n = np.where((face_ids >= 0)[..., None], n, 0.0).sum(-2)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _separate(model, topo: BodyTopology, verts: np.ndarray, joints: np.ndarray, frames: np.ndarray,
              touch: np.ndarray, movable: list[float], margin: float, iters: int) -> np.ndarray:
    """Offsets [len(frames), 2, 3] for people 0 and 1 at the given frames so that their arm-less bodies (legs
    included) do not intersect, batched over frames. `touch` [len(frames)] in [0, 1]: where > 0, the bodies are
    first pulled together by touch x (gap - margin) (contact, e.g. chests in an embrace), then every round pushes
    the penetrating frames apart by depth + margin along the line between the torsos (`iters` rounds, each
    batched over the frames that still penetrate)."""
    off = np.zeros((len(frames), 2, 3))
    keep = np.flatnonzero(~topo.arm_vertex)[::6]
    frames = np.asarray(frames)
    touch = np.asarray(touch, float)
    # Only frames where the two arm-less bodies' boxes come within 5 cm (or that ask for contact) can need a push;
    # the others keep a zero offset.
    ta, tb = verts[0][frames][:, keep], verts[1][frames][:, keep]
    near = np.all((ta.min(1) < tb.max(1) + 0.05) & (tb.min(1) < ta.max(1) + 0.05), -1) | (touch > 0)
    sel = np.flatnonzero(near)
    if sel.size == 0:
        return off
    frames, touch = frames[sel], touch[sel]
    va, vb = verts[0, frames], verts[1, frames]
    d = joints[1, frames, 6] - joints[0, frames, 6]  # spine2: torso centres
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
    wa, wb = movable[0], movable[1]
    tot = max(wa + wb, 1e-9)
    wa, wb = wa / tot, wb / tot
    shift = np.zeros(len(frames))  # signed push along d (+ = apart)
    todo = np.arange(len(frames))
    for it in range(iters + 1):  # round 0 pulls (touch) and pushes; the others only push
        sa = (-wa * shift[todo, None] * d[todo])[:, None]
        sb = (wb * shift[todo, None] * d[todo])[:, None]
        depth_b, gap_b = _pen_depth_batched(vb[todo][:, keep] + sb, va[todo] + sa, topo.torso_clusters)
        depth_a, gap_a = _pen_depth_batched(va[todo][:, keep] + sa, vb[todo] + sb, topo.torso_clusters)
        depth, gap = np.maximum(depth_a, depth_b), np.minimum(gap_a, gap_b)
        push = np.where(depth > 0, depth + margin, 0.0)
        if it == 0:
            push = np.where(depth > 0, push, -touch[todo] * np.maximum(gap - margin, 0.0))
        shift[todo] += push
        todo = todo[depth > 0] if it > 0 else todo[np.abs(push) > 1e-3]
        if todo.size == 0 or it == iters:
            break
    off[sel, 0] = -wa * shift[:, None] * d
    off[sel, 1] = wb * shift[:, None] * d
    return off


def _pen_depth_batched(points: np.ndarray, mesh_verts: np.ndarray, clusters) -> tuple[np.ndarray, np.ndarray]:
    """`_pen_depth` over frames, padded to a power of two (a few compiled shapes instead of one per count)."""
    n = len(points)
    m = 1 << max(int(np.ceil(np.log2(max(n, 1)))), 2)
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], m - n, 0)], 0) if m > n else a  # noqa: E731
    dep, gap = _pen_depth(jnp.asarray(pad(points), jnp.float32), jnp.asarray(pad(mesh_verts), jnp.float32), clusters)
    return np.asarray(dep, np.float64)[:n], np.asarray(gap, np.float64)[:n]


@jax.jit
def _pen_depth(points, mesh_verts, clusters):
    """Per frame: deepest penetration of `points` into the mesh and smallest gap of outside points (m)."""

    def one(p, v):
        w, dist = winding_and_distance(p, v, clusters, near_clusters=8)
        inside = jnp.abs(w) > 0.5
        return jnp.max(jnp.where(inside, dist, 0.0)), jnp.min(jnp.where(inside, jnp.inf, dist))

    return jax.lax.map(lambda x: one(*x), (points, mesh_verts))


@dataclass
class _ArmIK:
    """IK solution of one arm over all frames: local rotations and the reached chain positions (world)."""

    L_sh: np.ndarray
    L_el: np.ndarray
    L_wr: np.ndarray
    S: np.ndarray
    E: np.ndarray
    W: np.ndarray
    tip: np.ndarray  # end of the hand (finger base), [F, 3]
    G_co: np.ndarray | None = None  # keyframed world rotation of the collar (parent of the shoulder), [F, 3, 3]
    K_loc: tuple | None = None  # keyframed local rotations of shoulder, elbow, wrist, each [F, 3, 3]
    bones: tuple | None = None  # rest bone vectors shoulder->elbow, elbow->wrist, wrist->hand


def _arm_ik(track: _Track, side: str, rest: np.ndarray, shoulder_pos: np.ndarray, targets: np.ndarray,
            normals: np.ndarray, pole_local: np.ndarray, parents, swivel: np.ndarray | None = None) -> _ArmIK:
    """Analytic IK of one arm over all frames (vectorized), palm resting on `targets` (skin point + clearance
    along the outward `normals`, [F, 3]), hand flat along the surface, palm turned towards it. `swivel` [F]
    (radians) turns the elbow's bend direction about the shoulder-wrist axis away from the keyframed pole."""
    ix = _SIDE_IDX[side]
    s = ix["sign"]
    sh, el, wr, hd, co = ix["shoulder"], ix["elbow"], ix["wrist"], ix["hand"], ix["collar"]
    G = global_rotations(track.rot, parents)  # [F, 24, 3, 3]
    l1 = np.linalg.norm(rest[el] - rest[sh])
    l2 = np.linalg.norm(rest[wr] - rest[el])
    hand_len = np.linalg.norm(rest[hd] - rest[wr])
    r1 = (rest[el] - rest[sh]) / l1
    r2 = (rest[wr] - rest[el]) / l2
    r3 = (rest[hd] - rest[wr]) / hand_len
    # Hand along the surface, in the direction the arm arrives from (tangent plane projection).
    app = targets - shoulder_pos
    t_hand = app - np.sum(app * normals, -1, keepdims=True) * normals
    t_hand /= np.maximum(np.linalg.norm(t_hand, axis=-1, keepdims=True), 1e-9)
    wrist_target = targets + normals * _PALM_OFFSET - 0.5 * hand_len * t_hand
    pole = np.einsum("fij,fj->fi", G[:, _SPINE3], pole_local * np.array([s, 1.0, 1.0]))
    if swivel is not None:
        axis = wrist_target - shoulder_pos
        axis /= np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-9)
        pole = np.einsum("fij,fj->fi", aa_to_mat(axis * swivel[:, None]), pole)
    E, W, _ = two_bone_ik(shoulder_pos, wrist_target, pole, np.full(len(pole), l1), np.full(len(pole), l2))
    b1 = (E - shoulder_pos) / l1
    b2 = W - E
    b2 /= np.linalg.norm(b2, axis=-1, keepdims=True)
    # Elbow hinge: the T-pose vertical (module scenarios: forearm to the front of a hanging arm).
    h_rest = np.array([0.0, -s, 0.0])
    h_rest = h_rest - (h_rest @ r1) * r1
    h_rest /= np.linalg.norm(h_rest)
    h = np.cross(b1, b2)
    hn = np.linalg.norm(h, axis=-1, keepdims=True)
    alt = np.cross(b1, pole)
    h = np.where(hn > 1e-6, h / np.maximum(hn, 1e-12), alt / np.maximum(np.linalg.norm(alt, axis=-1, keepdims=True),
                                                                        1e-12))
    F_rest = np.stack([r1, h_rest, np.cross(r1, h_rest)], -1)
    F_tgt = np.stack([b1, h, np.cross(b1, h)], -1)
    G_sh = F_tgt @ F_rest.T
    L_sh = np.swapaxes(G[:, co], -1, -2) @ G_sh
    # Elbow: bend onto b2, then turn the forearm about its axis so the palm faces the surface (palm normal in the
    # T-pose is -y); 60% of that twist at the elbow, the rest at the wrist, limited to what a forearm does.
    R_bend = rotation_between(np.broadcast_to(r2, b2.shape), np.einsum("fji,fj->fi", G_sh, b2))
    G_el0 = G_sh @ R_bend
    palm = np.einsum("fij,j->fi", G_el0, np.array([0.0, -1.0, 0.0]))
    want = -normals
    pp = palm - np.sum(palm * b2, -1, keepdims=True) * b2
    ww = want - np.sum(want * b2, -1, keepdims=True) * b2
    ang = np.arctan2(np.sum(np.cross(pp, ww) * b2, -1), np.sum(pp * ww, -1))
    ang = np.clip(ang, -np.deg2rad(110), np.deg2rad(110))
    tw_el = aa_to_mat(r2[None] * (0.6 * ang)[:, None])
    L_el = R_bend @ tw_el
    G_el = G_sh @ L_el
    tw_wr = aa_to_mat(r3[None] * (0.4 * ang)[:, None])
    R_w = rotation_between(np.broadcast_to(r3, t_hand.shape), np.einsum("fji,fj->fi", G_el @ tw_wr, t_hand))
    L_wr = tw_wr @ R_w
    tip = W + hand_len * t_hand
    return _ArmIK(L_sh=L_sh, L_el=L_el, L_wr=L_wr, S=shoulder_pos, E=E, W=W, tip=tip, G_co=G[:, co],
                  K_loc=(track.rot[:, sh], track.rot[:, el], track.rot[:, wr]),
                  bones=(rest[el] - rest[sh], rest[wr] - rest[el], rest[hd] - rest[wr]))


def _apply_ik(track: _Track, side: str, ik: _ArmIK, weight: np.ndarray) -> None:
    """Blend the IK rotations into `track.rot` with per-frame weights (quaternion slerp)."""
    ix = _SIDE_IDX[side]
    for j, L in ((ix["shoulder"], ik.L_sh), (ix["elbow"], ik.L_el), (ix["wrist"], ik.L_wr)):
        track.rot[:, j] = quat_to_mat(slerp(mat_to_quat(track.rot[:, j]), mat_to_quat(L), weight))


def _arm_radii(model: BodyModel, betas: np.ndarray, rest: np.ndarray, side: str) -> np.ndarray:
    """Median skin distance (m) from the bone line of the upper arm, forearm and hand of a shaped body."""
    ix = _SIDE_IDX[side]
    v = np.asarray(model.v_template, np.float64) + np.asarray(model.shapedirs, np.float64) @ betas
    dom = np.argmax(np.asarray(model.weights), 1)
    out = []
    for j0, j1 in ((ix["shoulder"], ix["elbow"]), (ix["elbow"], ix["wrist"]), (ix["wrist"], ix["hand"])):
        a, b = rest[j0], rest[j1]
        pts = v[dom == j0]
        t = np.clip((pts - a) @ (b - a) / np.dot(b - a, b - a), 0, 1)
        out.append(float(np.median(np.linalg.norm(pts - (a + t[:, None] * (b - a)), axis=1))))
    return np.array(out)


_ARM_SAMPLES = np.linspace(0.15, 1.0, 5)
_FINGER_REACH = 1.9  # the hand proxy runs from the wrist to the fingertips: this x the wrist-to-knuckle length


def _arm_axis_points(ik: _ArmIK, weight: np.ndarray | None = None) -> np.ndarray:
    """[F, 15, 3] points along the upper arm, forearm and hand (to the fingertips) axes (capsule proxy of the arm).
    With `weight` [F]: of the arm actually posed, the keyframed arm slerped towards the IK solution by that weight
    (`_apply_ik`), so blend-in and blend-out frames are checked too."""
    if weight is None:
        S, E, W, T = ik.S, ik.E, ik.W, ik.tip
    else:
        bl = [quat_to_mat(slerp(mat_to_quat(k), mat_to_quat(L), weight))
              for k, L in zip(ik.K_loc, (ik.L_sh, ik.L_el, ik.L_wr))]
        G_sh = ik.G_co @ bl[0]
        G_el = G_sh @ bl[1]
        G_wr = G_el @ bl[2]
        S = ik.S
        E = S + np.einsum("fij,j->fi", G_sh, ik.bones[0])
        W = E + np.einsum("fij,j->fi", G_el, ik.bones[1])
        T = W + np.einsum("fij,j->fi", G_wr, ik.bones[2])
    T = W + _FINGER_REACH * (T - W)
    segs = [(S, E), (E, W), (W, T)]
    return np.concatenate([a[:, None] + _ARM_SAMPLES[None, :, None] * (b - a)[:, None] for a, b in segs], 1)


@jax.jit
def _signed_distance(points, mesh_verts, clusters):
    """Signed distance (m, negative inside) of points [F, n, 3] to meshes [F, V, 3]."""

    def one(p, v):
        w, d = winding_and_distance(p, v, clusters, near_clusters=8)
        return jnp.where(jnp.abs(w) > 0.5, -d, d)

    return jax.lax.map(lambda x: one(*x), (points, mesh_verts), batch_size=4)


def _arm_depths(verts: np.ndarray, jobs: list, topo: BodyTopology) -> np.ndarray:
    """[jobs, frames] deepest penetration (m) of each job's forearm and hand vertices (every 3rd) into the
    partner's whole posed mesh. verts: [2, frames, V, 3]."""
    from h4djax.body.model import SMPL_JOINT_NAMES

    out = np.zeros((len(jobs), verts.shape[1]))
    for q in (0, 1):
        ks = [k for k, j in enumerate(jobs) if j["q"] == q]
        if not ks:
            continue
        ids = [topo.forearm_vertex[jobs[k]["side"]] for k in ks]
        pts = np.concatenate([verts[jobs[k]["p"]][:, i] for k, i in zip(ks, ids)], 1)
        d = np.asarray(_inside_depth(jnp.asarray(pts, jnp.float32), jnp.asarray(verts[q], jnp.float32),
                                     topo.clusters))
        o = np.cumsum([0] + [len(i) for i in ids])
        for n, k in enumerate(ks):
            out[k] = d[:, o[n]:o[n + 1]].max(1)
    return out


@jax.jit
def _inside_depth(points, mesh_verts, clusters):
    """Depth (m) of points [F, n, 3] inside meshes [F, V, 3] (0 outside)."""

    def one(p, v):
        w, d = winding_and_distance(p, v, clusters, near_clusters=8)
        return jnp.where(jnp.abs(w) > 0.5, d, 0.0)

    return jax.lax.map(lambda x: one(*x), (points, mesh_verts), batch_size=4)


def _contact_targets(name_arr: np.ndarray, partner_verts: np.ndarray, partner_normals: np.ndarray,
                     topo: BodyTopology, hold: np.ndarray, hold_normal: np.ndarray):
    """Per frame the skin point and normal of the named anchor (or the hold point). name_arr: [F] of str."""
    F = len(name_arr)
    idx = {n: i for i, n in enumerate(topo.anchor_names)}
    ai = np.array([idx.get(n, -1) for n in name_arr])
    pos = np.where((ai >= 0)[:, None], partner_verts[np.arange(F), np.maximum(ai, 0)], hold)
    nrm = np.where((ai >= 0)[:, None], partner_normals[np.arange(F), np.maximum(ai, 0)], hold_normal)
    return pos, nrm


_REACH_USE = 0.93  # a wrist target farther than this x (upper arm + forearm) from the shoulder counts as out of reach


def _reachable_targets(name_arr: np.ndarray, partner_verts: np.ndarray, partner_normals: np.ndarray,
                       topo: BodyTopology, hold: np.ndarray, hold_normal: np.ndarray, shoulder: np.ndarray,
                       bones: tuple[float, float, float], clear: np.ndarray, fps: float,
                       fallback: dict[str, tuple[str, ...]]):
    """`_contact_targets`, with anchors out of reach replaced by their fallbacks (`Contact.fallback`).

    Where the palm point of an anchor with fallbacks (`fallback`: anchor -> fallback anchors; palm point = skin
    point + clearance + palm thickness along the normal) is farther from the shoulder [F, 3] than the arm reaches
    (`_REACH_USE` x (upper arm + forearm) + 0.4 x hand, bones = those three lengths in m), the target slides along
    the anchor's fallbacks to the first anchor within reach, interpolated between consecutive anchors and smoothed
    over ~0.25 s (max filter, then Gaussian) so the hand glides rather than jumps: over ~0.1 s, a hand lifted off the
    skin (palm lift rounds) swung with the turning normal at up to 3 m/s, and on the 180-frame seed-1 dance the final
    de-penetration (whose temporal smoothness resists such fast motion) left a forearm 35 mm inside the partner's
    upper arm; over 0.25 s it converged to 2 mm. A two-bone arm sent to an unreachable target is straightened along
    the line to it, which around a partner's back runs through the partner's flank (the dance hold put the hand up
    to 100 mm inside the partner before the final de-penetration: 90 frames, seeds 0-2)."""
    pos, nrm = _contact_targets(name_arr, partner_verts, partner_normals, topo, hold, hold_normal)
    limit = _REACH_USE * (bones[0] + bones[1]) + 0.4 * bones[2]
    F = len(name_arr)
    for name in sorted(set(name_arr.tolist()) & set(fallback)):
        chain = (name,) + tuple(fallback[name])
        cand = [_contact_targets(np.full(F, n), partner_verts, partner_normals, topo, hold, hold_normal)
                for n in chain]
        P = np.stack([c[0] for c in cand])  # [K, F, 3]
        N = np.stack([c[1] for c in cand])
        dist = np.linalg.norm(P + N * (clear + _PALM_OFFSET)[None, :, None] - shoulder[None], axis=-1)  # [K, F]
        ok = dist <= limit
        first = np.where(ok.any(0), np.argmax(ok, 0), len(chain) - 1).astype(float)
        here = name_arr == name
        idx = np.flatnonzero(here)  # other frames take the next frame of this anchor's value (no pull at the edges)
        first = first[idx[np.minimum(np.searchsorted(idx, np.arange(F)), len(idx) - 1)]]
        w = max(1, int(round(0.25 * fps)))
        sl = gaussian_filter1d(maximum_filter1d(first, 2 * w + 1, mode="nearest"), sigma=w, mode="nearest")
        k0 = np.clip(np.floor(sl).astype(int), 0, len(chain) - 1)
        k1 = np.minimum(k0 + 1, len(chain) - 1)
        f = (sl - k0)[:, None]
        fr = np.arange(F)
        p_s = (1 - f) * P[k0, fr] + f * P[k1, fr]
        n_s = (1 - f) * N[k0, fr] + f * N[k1, fr]
        n_s /= np.maximum(np.linalg.norm(n_s, axis=-1, keepdims=True), 1e-9)
        pos = np.where(here[:, None], p_s, pos)
        nrm = np.where(here[:, None], n_s, nrm)
    return pos, nrm


def _floor_y(verts: np.ndarray) -> np.ndarray:
    """Translation (m) lifting each person-frame so its lowest vertex is on the floor. verts [P, F, V, 3]."""
    return -verts[..., 1].min(-1)


def generate(cfg: SynthConfig, model: BodyModel | None = None, progress: bool = False,
             measure_frames: int = 60) -> SynthCapture:
    """Generate a synthetic capture (see module docstring). `measure_frames`: how many evenly spaced frames the
    ground-truth interpenetration is measured on (0 = skip)."""
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def tick(name, t0):
        timings[name] = round(time.perf_counter() - t0, 3)
        if progress:
            print(f"  synth: {name:<14s} {timings[name]:7.2f} s", flush=True)
        return time.perf_counter()

    mc, nc = cfg.motion, cfg.noise
    if mc.scenario not in SCENARIOS:
        raise ConfigError(f"motion.scenario: unknown scenario {mc.scenario!r}; choose from {sorted(SCENARIOS)}")
    if mc.num_people < 2:
        raise ConfigError(f"motion.num_people: close interaction needs at least 2 people, got {mc.num_people}")
    if mc.num_frames < 2 or mc.fps <= 0:
        raise ConfigError("motion.num_frames must be >= 2 and motion.fps > 0")
    model = model if model is not None else load_body_model()
    t0 = time.perf_counter()
    topo = body_topology(model)
    ss = np.random.SeedSequence(cfg.seed)
    r_rig, r_shape, r_motion, r_noise, r_jit = (np.random.default_rng(s) for s in ss.spawn(5))
    cams = make_rig(cfg.rig, r_rig)
    P, F_out = mc.num_people, mc.num_frames
    # Simulated at `supersample` x fps (MotionConfig.sim_fps), subsampled to fps after the de-penetration (step 8).
    supersample = max(1, int(np.ceil(mc.sim_fps / mc.fps - 1e-9)))
    F, fps = (F_out - 1) * supersample + 1, mc.fps * supersample
    betas = np.clip(mc.betas_std * r_shape.standard_normal((P, model.num_betas)), -2.5, 2.5)
    # Scenario script over the warped duration (+1 s so the last frames never clamp onto the end pose).
    times = _time_warp(F, fps, mc.tempo, mc.timing_jitter, r_motion)
    duration = float(times[-1]) + 1.0
    script: Script = SCENARIOS[mc.scenario](duration, r_motion, mc.position_jitter)
    keys = list(script.keys)
    radius = cfg.rig.arena_size / 2.0 - 0.5
    for _ in range(2, P):
        keys.append(bystander_keys(duration, r_motion, radius))
    tracks = [_interpolate_track(k, times, mc.interpolation, mc.pose_jitter_deg, _sway(F, times, mc.sway_deg, r_jit),
                                 r_jit) for k in keys]
    rest = np.asarray(jax.vmap(lambda b: model.J_template + model.J_shapedirs @ b)(jnp.asarray(betas, jnp.float32)),
                      np.float64)  # [P, 24, 3]
    t0 = tick("script", t0)

    # Pass 1: floor contact.
    rv, transl = _params_from(tracks, rest[:, 0], betas, y=np.zeros(1))
    verts, joints, _ = _forward(model, rv, betas, transl)
    y = _floor_y(verts)
    verts[..., 1] += y[..., None]
    joints[..., 1] += y[..., None]
    t0 = tick("pass1", t0)

    # Separation of the interacting pair on every `separation_stride`-th frame (and the last), batched; offsets
    # linearly interpolated in between. Touch (pull together) where both hands of someone are in contact (embrace,
    # hold, grappling), weighted by the contact weight so the pull fades in and out with the contact.
    stride = max(1, mc.separation_stride)
    sf = np.union1d(np.arange(0, F, stride), [F - 1])
    touch = np.zeros(len(sf))
    for tr in tracks[:2]:
        both = np.minimum(tr.contact_w["left"][sf], tr.contact_w["right"][sf])
        touch = np.maximum(touch, np.clip((both - 0.5) / 0.4, 0.0, 1.0))
    off_s = _separate(model, topo, verts, joints, sf, touch, script.movable, mc.separation_margin,
                      mc.separation_iters)
    offsets = np.zeros((P, F, 3))
    fr = np.arange(F)
    for p in range(2):
        for k in range(3):
            offsets[p, :, k] = np.interp(fr, sf, off_s[:, p, k])
    verts[:2] += offsets[:2, :, None, :]
    joints[:2] += offsets[:2, :, None, :]
    t0 = tick("separation", t0)

    # Hand contacts by IK onto the partner's skin (people 0 and 1).
    aidx = np.array([topo.anchor_vertex[n] for n in topo.anchor_names])
    anchor_pos = verts[:2][:, :, aidx]  # [2, F, A, 3]
    anchor_nrm = _vertex_normals(verts[:2], np.asarray(model.faces, np.int64), topo.anchor_faces)
    # Hand-hold point (dance): beside the pair at shoulder height, between person 0's left and 1's right shoulder.
    sh = (joints[0, :, 16] + joints[1, :, 17]) / 2
    dir01 = joints[1, :, 6] - joints[0, :, 6]
    dir01[:, 1] = 0
    dir01 /= np.maximum(np.linalg.norm(dir01, axis=-1, keepdims=True), 1e-9)
    left0 = joints[0, :, 16] - joints[0, :, 17]
    left0[:, 1] = 0
    left0 /= np.maximum(np.linalg.norm(left0, axis=-1, keepdims=True), 1e-9)
    hold = sh + 0.30 * left0 + np.array([0.0, 0.12, 0.0])  # out and up: the hold arms converge from wide apart
    # Each arm in contact: IK, then check the arm's capsule proxy (points along its bones, radius from the
    # person's own mesh) against the partner's arm-less body (the partner's arms are still in their keyframed pose
    # here) and lift the palm by the penetration, a few rounds.
    jobs = []
    for p in (0, 1):
        q = 1 - p
        for side in ("left", "right"):
            w = tracks[p].contact_w[side]
            if not np.any(w > 0):
                continue
            hold_p = hold - (0.05 if p == 0 else -0.05) * dir01
            hold_n = -dir01 if p == 0 else dir01
            a0, a1, u = tracks[p].contact_a[side]
            clear = mc.contact_clearance + tracks[p].contact_clear[side]
            ix = _SIDE_IDX[side]
            bones = tuple(float(np.linalg.norm(rest[p, b] - rest[p, a]))
                          for a, b in ((ix["shoulder"], ix["elbow"]), (ix["elbow"], ix["wrist"]),
                                       (ix["wrist"], ix["hand"])))
            shoulder = joints[p, :, ix["shoulder"]]
            chains = tracks[p].contact_fallback.get(side, {})
            p0, n0 = _reachable_targets(a0, anchor_pos[q], anchor_nrm[q], topo, hold_p, hold_n, shoulder, bones,
                                        clear, fps, chains)
            p1, n1 = _reachable_targets(a1, anchor_pos[q], anchor_nrm[q], topo, hold_p, hold_n, shoulder, bones,
                                        clear, fps, chains)
            nrm = n0 * (1 - u[:, None]) + n1 * u[:, None]
            nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-9)
            base = p0 * (1 - u[:, None]) + p1 * u[:, None]
            # Direction a blocked hand is moved in: off the skin and sideways away from the partner's spine (a
            # hand on the back slides towards the flank, which straightens the forearm's path around the body).
            lat = base - joints[q, :, _SPINE3]
            lat[:, 1] = 0.0
            lat /= np.maximum(np.linalg.norm(lat, axis=-1, keepdims=True), 1e-9)
            away = nrm + lat
            away /= np.maximum(np.linalg.norm(away, axis=-1, keepdims=True), 1e-9)
            jobs.append(dict(p=p, q=q, side=side, w=w, hold=bool(np.any(a0 == "hold") or np.any(a1 == "hold")), nrm=nrm, base=base, clear=clear, away=away,
                             radii=np.repeat(_arm_radii(model, betas[p], rest[p], side), len(_ARM_SAMPLES))))
    job_of = {(j["p"], j["side"]): i for i, j in enumerate(jobs)}
    arm_radii = {(p, side): np.repeat(_arm_radii(model, betas[p], rest[p], side), len(_ARM_SAMPLES))
                 for p in (0, 1) for side in ("left", "right")}
    active = np.flatnonzero(np.any([j["w"] > 0.05 for j in jobs], axis=0)) if jobs else np.zeros(0, int)
    check = active[:: max(1, mc.contact_check_stride)]
    kf_arm = {}  # keyframed arms' capsule points at the checked frames (arms without a contact stay so)
    for p in (0, 1):
        for side in ("left", "right"):
            ix = _SIDE_IDX[side]
            S, E, W, T = (joints[p, check, ix[n]] for n in ("shoulder", "elbow", "wrist", "hand"))
            T = W + _FINGER_REACH * (T - W)
            kf_arm[(p, side)] = np.concatenate(
                [a[:, None] + _ARM_SAMPLES[None, :, None] * (b - a)[:, None] for a, b in ((S, E), (E, W), (W, T))], 1)

    def ik_of(i, j, extra, swivel):
        return _arm_ik(tracks[j["p"]], j["side"], rest[j["p"]], joints[j["p"], :, _SIDE_IDX[j["side"]]["shoulder"]],
                       j["base"] + j["clear"][:, None] * j["nrm"] + extra[:, None] * j["away"], j["nrm"],
                       tracks[j["p"]].contact_pole[j["side"]], model.parents, swivel)

    def penetration(iks_, weights=None) -> np.ndarray:
        """[len(iks_), n_check] deepest capsule penetration of each arm (as posed: the keyframed arm slerped towards
        the IK solution by the contact weight, or by `weights[k]`) into its partner's arm-less body."""
        ws = weights if weights is not None else [jobs[k % len(jobs)]["w"] for k in range(len(iks_))]
        pts = [_arm_axis_points(ik, w)[check] for ik, w in zip(iks_, ws)]  # each [n_check, 15, 3]
        partner_of = [jobs[k % len(jobs)]["q"] for k in range(len(iks_))]
        sd = [None] * len(iks_)
        for q in sorted(set(partner_of)):  # one batched query per partner mesh and checked frame
            ks = [k for k in range(len(iks_)) if partner_of[k] == q]
            allp = np.concatenate([pts[k] for k in ks], 1)
            d = np.asarray(_signed_distance(jnp.asarray(allp, jnp.float32), jnp.asarray(verts[q, check], jnp.float32),
                                            topo.torso_clusters))
            for n, k in enumerate(ks):
                sd[k] = d[:, n * len(_ARM_SAMPLES) * 3:(n + 1) * len(_ARM_SAMPLES) * 3]
        sd = np.stack(sd)  # [n, n_check, 15]
        radii = np.stack([jobs[k % len(jobs)]["radii"] for k in range(len(iks_))])
        pen = radii[:, None] - sd
        # Arm against the partner's arms (capsule proxies: as posed by this candidate where the partner's arm is in
        # contact too, else keyframed); hand against hand is allowed (joined hands, grips).
        n_s = len(_ARM_SAMPLES)
        for k in range(len(iks_)):
            base, q = k - k % len(jobs), partner_of[k]
            for side in ("left", "right"):
                i_q = job_of.get((q, side))
                qp = pts[base + i_q] if i_q is not None else kf_arm[(q, side)]
                dd = np.linalg.norm(pts[k][:, :, None] - qp[:, None], axis=-1)  # [n_check, 15, 15]
                aa = arm_radii[(q, side)][None, None, :] + radii[k][None, :, None] - dd
                aa[:, 2 * n_s:, 2 * n_s:] = -np.inf
                pen[k] = np.maximum(pen[k], aa[:, :, 2:].max(-1))
        # The first samples of the upper arm sit at the person's own shoulder, which may touch the partner in an
        # embrace; only the distal upper arm, forearm and hand are checked.
        return np.max(pen[:, :, 2:], axis=-1)

    extra = [np.zeros(F) for _ in jobs]
    swivel = [np.zeros(F) for _ in jobs]
    rounds = 0
    if len(check) and jobs:
        # 1) Elbow swivel: try 12 bend directions about the shoulder-wrist axis, keep per checked frame the one
        #    with the least penetration (ties: nearest the keyframed pole), smoothed over time.
        cands = np.deg2rad(np.arange(-150, 181, 30))
        iks_c = [ik_of(i, j, extra[i], np.full(F, a)) for a in cands for i, j in enumerate(jobs)]
        pen = penetration(iks_c).reshape(len(cands), len(jobs), -1)  # [cands, jobs, n_check]
        cost = np.maximum(pen, 0.0) + 0.01 * np.abs(cands)[:, None, None] / np.pi
        best = cands[np.argmin(cost, 0)]  # [jobs, n_check]
        for i in range(len(jobs)):
            vec = np.stack([np.interp(np.arange(F), check, np.cos(best[i])),
                            np.interp(np.arange(F), check, np.sin(best[i]))], -1)
            vec = gaussian_filter1d(vec, sigma=2.0 * mc.contact_check_stride, axis=0, mode="nearest")
            swivel[i] = np.arctan2(vec[:, 1], vec[:, 0])
        # 2) Palm lift where the arm still penetrates, a few rounds.
        for rounds in range(1, mc.contact_rounds + 1):
            iks = [ik_of(i, j, extra[i], swivel[i]) for i, j in enumerate(jobs)]
            pen = penetration(iks) * np.stack([j["w"][check] > 0.05 for j in jobs])
            if np.max(pen) <= 0.002:
                break
            for i in range(len(jobs)):
                corr = np.interp(np.arange(F), check, np.maximum(pen[i], 0.0) + 0.003 * (pen[i] > 0))
                corr = maximum_filter1d(corr, 2 * mc.contact_check_stride + 1, mode="nearest")
                extra[i] = np.minimum(extra[i] + corr, _MAX_LIFT)
    iks = [ik_of(i, j, extra[i], swivel[i]) for i, j in enumerate(jobs)]
    if len(check) and jobs:
        # 3) Blend-in/out: where the keyframed arm (or the slerp path towards the contact) still enters the partner,
        #    the contact weight is raised towards 1 (the checked, lifted IK arm): per checked frame the smallest of
        #    a few boosts that clears the partner, then spread over the frames (max filter + smoothing).
        #    Where even the IK arm cannot clear (arms of both people crossing), the contact fades out instead
        #    (negative boosts: the weight scaled down towards the keyframed arm), as a last resort.
        boosts = np.array([0.0, 0.25, 0.5, 0.75, 1.0, -0.5, -1.0])
        ramp = [np.clip(j["w"] / 0.2, 0.0, 1.0) for j in jobs]

        def boosted(w, r, b):
            return w + b * (1 - w) * r if b >= 0 else w * (1 + b)

        pen_b = np.stack([penetration(iks, [boosted(j["w"], r, b) for j, r in zip(jobs, ramp)])
                          for b in boosts])  # [boosts, jobs, n_check]
        ok = pen_b <= 0.002
        pick = np.where(ok.any(0), np.argmax(ok, 0), np.argmin(pen_b, 0))
        for i, j in enumerate(jobs):
            bst = np.interp(np.arange(F), check, boosts[pick[i]])
            bst = maximum_filter1d(bst, 2 * mc.contact_check_stride + 1, mode="nearest")
            pos = np.clip(gaussian_filter1d(np.maximum(bst, 0), sigma=mc.contact_check_stride, mode="nearest"), 0, 1)
            neg = np.clip(gaussian_filter1d(np.minimum(bst, 0), sigma=mc.contact_check_stride, mode="nearest"), -1, 0)
            j["w"] = (j["w"] + pos * (1 - j["w"]) * ramp[i]) * (1 + neg)
    final_pen = (penetration(iks) * np.stack([j["w"][check] > 0.05 for j in jobs])) if (len(check) and jobs) else \
        np.zeros((0, 0))
    rot0 = [t.rot.copy() for t in tracks[:2]]
    for j, ik in zip(jobs, iks):
        _apply_ik(tracks[j["p"]], j["side"], ik, j["w"])
    # 4) Verification on the posed meshes: the forearm and hand vertices of every contact arm against the partner's
    #    whole mesh (arms included, as posed) on the checked frames; where they still enter, the palm is lifted by
    #    the depth found (`verify_rounds` rounds; fading the contact out instead would drop the arm into its
    #    keyframed pose, which may itself be inside the partner).
    verify = []
    if len(check) and jobs:
        for _ in range(mc.verify_rounds):
            rv_v, tr_v = _params_from(tracks, rest[:, 0], betas, y=y, offsets=offsets)
            sub = active[:: max(1, mc.contact_check_stride // 2)]  # denser than the proxy check
            vv, _, _ = _forward(model, rv_v[:, sub], betas, tr_v[:, sub])
            depth = _arm_depths(vv, jobs, topo)  # [jobs, len(sub)]
            verify.append(round(1000 * float(depth.max()), 1))
            if depth.max() <= 0.003:
                break
            for i, j in enumerate(jobs):
                corr = np.interp(np.arange(F), sub, depth[i] + 0.003 * (depth[i] > 0.003))
                corr = maximum_filter1d(corr, 2 * mc.contact_check_stride + 1, mode="nearest")
                extra[i] = np.minimum(extra[i] + corr, _MAX_LIFT)
            for p in (0, 1):
                tracks[p].rot = rot0[p].copy()
            iks = [ik_of(i, j, extra[i], swivel[i]) for i, j in enumerate(jobs)]
            for j, ik in zip(jobs, iks):
                _apply_ik(tracks[j["p"]], j["side"], ik, j["w"])
    stats_contact = {"lift_rounds": rounds, "verify_max_depth_mm": verify,
                     "max_palm_lift_mm": round(1000 * max((float(e.max()) for e in extra), default=0.0), 1),
                     "arm_proxy_max_penetration_mm": round(1000 * float(final_pen.max()) if final_pen.size else 0.0, 1)}
    t0 = tick("contact_ik", t0)

    # Pass 2: final bodies.
    rv, transl = _params_from(tracks, rest[:, 0], betas, y=y, offsets=offsets)
    verts, joints, kpts = _forward(model, rv, betas, transl)
    # The contact IK moved arms that may have been the lowest part in pass 1 (someone lying): people the separation
    # did not shift vertically go back onto the floor.
    low = verts[..., 1].min(-1)  # [P, F]
    drop = np.where(np.abs(offsets[..., 1]) < 1e-6, low, 0.0)
    transl[..., 1] -= drop
    verts[..., 1] -= drop[..., None]
    kpts[..., 1] -= drop[..., None]
    t0 = tick("pass2", t0)

    # De-penetration on the real meshes (people 0 and 1): what the proxies above missed.
    stats_dep = {"rounds": 0}
    if mc.depenetrate_rounds > 0:
        settings = DepenetrationSettings(
            rounds=mc.depenetrate_rounds, stride=mc.depenetrate_stride, margin=mc.depenetrate_margin,
            guard=mc.depenetrate_guard, tolerance=mc.depenetrate_tolerance, steps=mc.depenetrate_steps,
            fps=fps)
        rot2, tr2, stats_dep = depenetrate(
            model, topo.clusters, np.stack([t.rot for t in tracks[:2]]), betas[:2], transl[:2],
            lambda r, t: _forward(model, mat_to_aa(r), betas[:2], t)[0], settings,
            progress=(lambda m: print(f"  synth: depenetrate   {m}", flush=True)) if progress else None)
        for p in (0, 1):
            tracks[p].rot = rot2[p]
        transl[:2] = tr2
        rv = np.stack([mat_to_aa(t.rot) for t in tracks])
        verts, joints, kpts = _forward(model, rv, betas, transl)
        # The solve holds the floor as a soft constraint on every `stride`-th vertex; the floor contact rule of
        # pass 2 is applied once more, exactly (a few mm at most; nobody below the floor).
        low = verts[..., 1].min(-1)
        drop = np.where(np.abs(offsets[..., 1]) < 1e-6, low, np.minimum(low, 0.0))
        transl[..., 1] -= drop
        verts[..., 1] -= drop[..., None]
        kpts[..., 1] -= drop[..., None]
        stats_dep["floor_correction_mm"] = round(1000 * float(np.abs(drop).max()), 2)
        t0 = tick("depenetrate", t0)
    if supersample > 1:
        verts, kpts, rv, transl = (x[:, ::supersample] for x in (verts, kpts, rv, transl))
        F = F_out
    joints3d = kpts[:, :, :17].transpose(1, 0, 2, 3)  # [F, P, 17, 3]

    # Visibility and detector noise.
    vstride = max(1, nc.depth_vertex_stride)
    cams_j = to_jax(cams)
    vis = keypoint_visibility(cams_j, jnp.asarray(verts[:, :, ::vstride].transpose(1, 0, 2, 3)),
                              jnp.asarray(joints3d), grid=nc.depth_grid, self_margin=nc.self_occlusion_margin,
                              mutual_margin=nc.mutual_occlusion_margin)
    uv, front = project(cams_j, jnp.asarray(joints3d))  # [C, F, P, K, 2]
    uv = np.asarray(uv, np.float64).transpose(1, 0, 2, 3, 4)
    front = np.asarray(front).transpose(1, 0, 2, 3)
    occluder = np.asarray(vis.occluder) if nc.occlusion else np.full(front.shape, -1)
    t0 = tick("visibility", t0)
    kp, labels = apply_detector_noise(uv, front, np.asarray(cams.size), np.asarray(vis.box, np.float64),
                                      np.asarray(vis.in_front), occluder, nc, r_noise)
    t0 = tick("noise", t0)

    stats: dict = {"timings_s": timings, "contact": stats_contact, "depenetration": stats_dep}
    if measure_frames > 0:
        mf = np.unique(np.linspace(0, F - 1, min(measure_frames, F)).round().astype(int))
        ip = interpenetration(jnp.asarray(verts[0, mf]), jnp.asarray(verts[1, mf]), topo.clusters, vertex_stride=3)
        dmax = np.asarray(ip.depth_max)
        stats["interpenetration"] = {
            "frames_measured": int(len(mf)), "vertex_stride": 3,
            "max_depth_mm": round(float(dmax.max()) * 1000, 2),
            "mean_max_depth_mm": round(float(dmax.mean()) * 1000, 2),
            "p95_max_depth_mm": round(float(np.percentile(dmax, 95)) * 1000, 2),
            "frames_with_penetration": int(np.sum(np.asarray(ip.inside) > 0)),
            "mean_inside_vertices": round(float(np.mean(np.asarray(ip.inside))), 2),
        }
        # Closest approach (contact): the smallest gap between the two bodies over the measured frames.
        t0 = tick("interpenetration", t0)
    lab = labels
    stats["noise_labels"] = {name: round(float(np.mean(lab == k)), 5) for k, name in NOISE_LABELS.items()}
    timings["total"] = round(time.perf_counter() - t_start, 3)
    go = rv[..., 0, :].transpose(1, 0, 2)
    bp = rv[..., 1:, :].reshape(P, F, 69).transpose(1, 0, 2)
    return SynthCapture(
        cameras=cams, keypoints=kp, clean=uv.astype(np.float32), labels=labels, joints3d=joints3d.astype(np.float32),
        global_orient=go.astype(np.float32), body_pose=bp.astype(np.float32), betas=betas.astype(np.float32),
        transl=transl.transpose(1, 0, 2).astype(np.float32), fps=float(mc.fps), config=cfg, stats=stats,
    )


def _normalize_zip(path: Path) -> None:
    """Rewrite a .npz with fixed member timestamps (numpy stamps the wall clock), so equal arrays give equal
    bytes."""
    with zipfile.ZipFile(path) as z:
        items = [(i, z.read(i.filename)) for i in z.infolist()]
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for info, data in items:
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = info.compress_type
            zi.external_attr = info.external_attr
            z.writestr(zi, data)
    tmp.replace(path)


def write_synth_capture(directory: str | Path, sc: SynthCapture) -> Path:
    """Write the capture directory of FORMATS.md (cameras.toml, keypoints2d.npz, gt.npz) with
    `h4djax.io.capture.write_capture`, plus `synth.npz` (clean 2D projections, noise labels) and `synth.json`
    (config and measured stats). Byte-identical for identical inputs."""
    from h4djax.io.capture import Capture, GroundTruth, write_capture

    root = Path(directory)
    gt = GroundTruth(joints3d=sc.joints3d, global_orient=sc.global_orient, body_pose=sc.body_pose, betas=sc.betas,
                     transl=sc.transl)
    cap = Capture(cameras=sc.cameras, keypoints=sc.keypoints, joint_set=JOINT_SET, associated=True, fps=sc.fps, gt=gt)
    write_capture(root, cap)
    np.savez_compressed(root / "synth.npz", clean=sc.clean, labels=sc.labels)
    for name in ("keypoints2d.npz", "gt.npz", "synth.npz"):
        _normalize_zip(root / name)
    stats = {k: v for k, v in sc.stats.items() if k != "timings_s"}
    meta = {"config": to_dict(sc.config), "stats": stats, "joint_set": JOINT_SET,
            "noise_labels": NOISE_LABELS}
    (root / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return root
