"""Scripted close interactions: keyframed poses of the body model, with hand contacts solved by IK.

A scenario is a function `(duration, rng) -> Script`: per person, keyframes `(time, Pose)` that loop short motifs
(approach, embrace, sway, release ...) until the duration is filled, each repetition varied by the random generator.
Poses are written with the anatomical helpers below (`arm`, `elbow`, `leg`, `spine`, `head`), which encode the
SMPL axis conventions once (y up, z forward, x = subject's left; zero pose = T-pose, palms down):

- trunk/neck flexion (bend forward) = +x rotation, lateral bend to the left = -z, turn to the left = +y;
- hip flexion (thigh forward) = -x, knee flexion = +x, ankle dorsiflexion = -x, hip abduction left = +z / right = -z;
- arms are given as a direction in the parent (torso) frame -- azimuth from straight out to the side towards the
  front, elevation from horizontal -- and reached by the smallest rotation from the T-pose direction; the elbow is a
  hinge about the T-pose vertical (forearm towards the front when the arm hangs down).

`Contact`s name a target on the partner (an `Anchor` on the partner's skin, or a shared hand-hold point) that a hand
reaches with a weight in [0, 1]: the generator blends the keyframed arm with an analytic two-bone IK solution
placing the palm `contact_clearance` off the partner's skin (h4djax.synth.generate).

Scenarios: hug (approach, embrace with hands on the partner's back, sway, release), wrestle (grappling on the
ground: mount, the one on top pinning the chest while the one below frames the hips, and guard, the one on top
posting on the hips while the one below pulls on the chest), dance (partner dance: one hand on the partner's lower
back under the partner's arm, the other's hand over it on the shoulder, hands joined, rotating box steps), fencing
(en-garde stance, advances, retreats, lunges with the hand stopping short of the partner's chest, a corps-a-corps).
People beyond the first two walk around the arena.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from h4djax.body.model import SMPL_JOINT_NAMES
from h4djax.synth.motion import aa_to_mat, mat_to_aa, rotation_between

__all__ = ["Pose", "Contact", "Anchor", "Script", "ANCHORS", "SCENARIOS", "arm", "elbow", "leg",
           "spine", "head", "stand", "pose_rotvecs", "bystander_keys"]

J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
_SIDES = ("left", "right")


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A point on the skin: among vertices skinned mostly to `joints`, within `band` (m) of the height
    `joint`'s rest height + `dy`, the one farthest in direction `direction` (rest frame) from `joint`."""

    joint: str
    direction: tuple[float, float, float]
    dy: float = 0.0
    band: float = 0.06
    joints: tuple[str, ...] = ("pelvis", "spine1", "spine2", "spine3")


def _mirror(a: Anchor) -> Anchor:
    swap = lambda n: n.replace("left", "@").replace("right", "left").replace("@", "right")  # noqa: E731
    d = a.direction
    return Anchor(swap(a.joint), (-d[0], d[1], d[2]), a.dy, a.band, tuple(swap(j) for j in a.joints))


_LEFT_ANCHORS = {
    # Back anchors sit well off the spine (about 10 cm), so a forearm coming around the flank reaches them without
    # cutting the corner of the torso.
    "upper_back": Anchor("spine3", (0.85, 0.0, -1.0), dy=0.02),
    "mid_back": Anchor("spine2", (0.9, 0.0, -1.0)),
    "lower_back": Anchor("spine1", (0.85, 0.0, -1.0), dy=-0.02),
    # Towards the flank at the heights of the upper, mid and lower back, and the top of the upper arm: fallbacks of
    # a contact whose anchor is out of reach (`Contact.fallback`).
    "upper_back_flank": Anchor("spine3", (2.2, 0.0, -1.0)),
    "mid_back_flank": Anchor("spine2", (2.2, 0.0, -1.0)),
    "lower_back_flank": Anchor("spine1", (2.2, 0.0, -1.0), dy=-0.02),
    "chest": Anchor("spine3", (0.5, 0.0, 1.0), dy=0.0),
    "waist": Anchor("spine1", (1.0, 0.0, 0.1)),
    "shoulder": Anchor("left_shoulder", (0.0, 1.0, -0.15), band=0.05,
                       joints=("left_collar", "left_shoulder", "spine3")),
    "upper_arm": Anchor("left_elbow", (0.3, 0.2, -1.0), dy=0.0, band=0.12, joints=("left_shoulder",)),
    "deltoid": Anchor("left_shoulder", (0.25, 1.0, 0.0), band=0.12, joints=("left_shoulder",)),
}
#: Skin anchors by name: "<site>_left" / "<site>_right" (the subject's own left/right).
ANCHORS: dict[str, Anchor] = {}
for _k, _a in _LEFT_ANCHORS.items():
    ANCHORS[f"{_k}_left"] = _a
    ANCHORS[f"{_k}_right"] = _mirror(_a)


@dataclass(frozen=True)
class Contact:
    """A hand reaching a target on the partner (`anchor` in ANCHORS, or "hold" = the pair's hand-hold point).

    weight: blend of the IK solution over the keyframed arm (interpolated between keyframes).
    clearance: extra gap (m) on top of MotionConfig.contact_clearance (near-contact, e.g. fencing touches).
    pole: direction (torso frame, for the LEFT arm; mirrored for the right) the elbow bends towards.
    fallback: anchors the hand target slides along, in order (interpolated, smoothly in time), where `anchor` is out
    of the arm's reach (h4djax.synth.generate): a two-bone arm sent to an unreachable target straightens along the
    line to it, which around a partner's back runs through the partner.
    """

    anchor: str
    weight: float = 1.0
    clearance: float = 0.0
    pole: tuple[float, float, float] = (1.0, -0.6, -0.3)
    fallback: tuple[str, ...] = ()


@dataclass
class Pose:
    """One keyframe of one person.

    root: pelvis position on the floor plane (x, z) in metres (the height follows from floor contact).
    yaw: heading in degrees (0 = facing +z, 90 = facing +x). pitch: tilt forward (+) / backward (-) of the whole
    body about its own left-right axis (lying on the back = -90). roll: tilt about its forward axis (+ = onto the
    right side).
    joints: local rotations (rotation vectors, radians) by SMPL joint name; missing joints are zero.
    contacts: per hand ("left"/"right") a Contact or None.
    """

    root: tuple[float, float]
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    joints: dict[str, np.ndarray] = field(default_factory=dict)
    contacts: dict[str, Contact | None] = field(default_factory=dict)

    def with_(self, **joints_or_fields) -> Pose:
        """A copy with fields replaced and joint rotations merged (`joints=...` dicts are merged, not replaced)."""
        j = dict(self.joints)
        j.update(joints_or_fields.pop("joints", {}))
        c = dict(self.contacts)
        c.update(joints_or_fields.pop("contacts", {}))
        return dataclasses.replace(self, joints=j, contacts=c, **joints_or_fields)


@dataclass
class Script:
    """Keyframes of every person: keys[p] = list of (time s, Pose), times strictly increasing.

    floor: per person, True = the lowest vertex rests on the floor in every frame (standing, kneeling, lying).
    movable: per person, share of a separation push this person takes (0 = stays put, e.g. the one on the ground).
    """

    keys: list[list[tuple[float, Pose]]]
    movable: list[float]


# ---------------------------------------------------------------------------------------------------------------
# Anatomical pose helpers (rotation vectors in radians, keyed by SMPL joint name)
# ---------------------------------------------------------------------------------------------------------------


def _rv(x=0.0, y=0.0, z=0.0) -> np.ndarray:
    return np.deg2rad(np.array([x, y, z], np.float64))


def _sgn(side: str) -> float:
    return 1.0 if side == "left" else -1.0


def arm(side: str, az: float = 0.0, el: float = -70.0, twist: float = 0.0, collar: float = 0.0) -> dict:
    """Upper-arm direction in the torso frame: `az` degrees from straight out to the side towards the front,
    `el` degrees above horizontal (-90 = hanging down); `twist` about the arm axis (+ = thumb forward/up);
    `collar` raises the shoulder girdle (shrug, degrees)."""
    s = _sgn(side)
    a, e = np.deg2rad(az), np.deg2rad(el)
    rest = np.array([s, 0.0, 0.0])
    d = np.array([s * np.cos(e) * np.cos(a), np.sin(e), np.cos(e) * np.sin(a)])
    R = rotation_between(rest, d) @ aa_to_mat(rest * np.deg2rad(twist) * -s)
    out = {f"{side}_shoulder": mat_to_aa(R)}
    if collar:
        out[f"{side}_collar"] = _rv(z=s * collar)
    return out


def elbow(side: str, flex: float) -> dict:
    """Elbow flexion (degrees): hinge about the T-pose vertical, forearm towards the front of a hanging arm."""
    return {f"{side}_elbow": np.array([0.0, -_sgn(side), 0.0]) * np.deg2rad(flex)}


def wrist(side: str, flex: float = 0.0, dev: float = 0.0) -> dict:
    return {f"{side}_wrist": _rv(z=_sgn(side) * flex, y=-_sgn(side) * dev)}


def leg(side: str, flex: float = 0.0, abd: float = 0.0, knee: float = 0.0, ankle: float = 0.0,
        rot: float = 0.0) -> dict:
    """Hip flexion (thigh forward, degrees), abduction (outwards), knee flexion, ankle dorsiflexion, hip rotation
    (toes outwards)."""
    s = _sgn(side)
    hip = aa_to_mat(_rv(z=s * abd)) @ aa_to_mat(_rv(x=-flex)) @ aa_to_mat(_rv(y=s * rot))
    return {f"{side}_hip": mat_to_aa(hip), f"{side}_knee": _rv(x=knee), f"{side}_ankle": _rv(x=-ankle)}


def spine(flex: float = 0.0, bend: float = 0.0, twist: float = 0.0) -> dict:
    """Trunk flexion forward, lateral bend to the left, turn to the left (degrees), spread over spine1..3."""
    r = mat_to_aa(aa_to_mat(_rv(y=twist / 3)) @ aa_to_mat(_rv(x=flex / 3, z=-bend / 3)))
    return {"spine1": r, "spine2": r, "spine3": r}


def head(flex: float = 0.0, turn: float = 0.0, tilt: float = 0.0) -> dict:
    """Nod forward, turn to the left, tilt towards the left shoulder (degrees), split over neck and head."""
    r = mat_to_aa(aa_to_mat(_rv(y=turn / 2)) @ aa_to_mat(_rv(x=flex / 2, z=-tilt / 2)))
    return {"neck": r, "head": r}


def stand(arms_el: float = -72.0, elbow_flex: float = 12.0) -> dict:
    """Relaxed standing: arms hanging slightly away from the body, elbows a little bent, knees soft."""
    out: dict = {}
    for s in _SIDES:
        out |= arm(s, az=8, el=arms_el) | elbow(s, elbow_flex) | leg(s, flex=3, abd=3, knee=5, ankle=2)
    return out


def pose_rotvecs(p: Pose) -> np.ndarray:
    """[24, 3] local rotation vectors (root = global orientation from yaw/pitch/roll)."""
    out = np.zeros((24, 3))
    for name, rv in p.joints.items():
        out[J[name]] = rv
    g = aa_to_mat(_rv(y=p.yaw)) @ aa_to_mat(_rv(x=p.pitch)) @ aa_to_mat(_rv(z=p.roll))
    out[0] = mat_to_aa(g)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Script building helpers
# ---------------------------------------------------------------------------------------------------------------


class _Track:
    """Keyframes of one person, appended in time order."""

    def __init__(self):
        self.keys: list[tuple[float, Pose]] = []

    def add(self, t: float, pose: Pose) -> Pose:
        if self.keys and t <= self.keys[-1][0] + 1e-6:
            t = self.keys[-1][0] + 0.05
        self.keys.append((t, pose))
        return pose

    @property
    def last(self) -> Pose:
        return self.keys[-1][1]

    @property
    def t(self) -> float:
        return self.keys[-1][0] if self.keys else 0.0


def _heading(yaw_deg: float) -> np.ndarray:
    y = np.deg2rad(yaw_deg)
    return np.array([np.sin(y), np.cos(y)])  # (x, z) of the facing direction


def _side(yaw_deg: float) -> np.ndarray:
    """(x, z) of the subject's LEFT for a heading."""
    y = np.deg2rad(yaw_deg)
    return np.array([np.cos(y), -np.sin(y)])


def _steps(track: _Track, t0: float, t1: float, start, end, yaw: float, base: dict, period: float = 1.0,
           contacts=None) -> None:
    """Walk from `start` to `end` (x, z) between t0 and t1, keyframes every quarter gait cycle (contact and
    passing poses of each leg, arms swinging opposite)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    n = max(2, int(round((t1 - t0) / (period / 4))))
    for i in range(1, n + 1):
        u = i / n
        phase = i % 4
        j = dict(base)
        if i == n:
            pass  # arrive in the base pose
        elif phase in (1, 3):  # double support: one leg forward, the other back
            lead = "left" if phase == 1 else "right"
            trail = "right" if lead == "left" else "left"
            j |= leg(lead, flex=22, knee=6, ankle=4) | leg(trail, flex=-12, knee=10, ankle=-5)
            j |= arm(trail, az=25, el=-72) | arm(lead, az=-15, el=-75)
        else:  # passing: swing knee bent
            swing = "right" if phase == 2 else "left"
            j |= leg(swing, flex=15, knee=40, ankle=5)
        track.add(t0 + u * (t1 - t0), Pose(root=tuple(start + u * (end - start)), yaw=yaw, joints=j,
                                           contacts=dict(contacts or {})))


def _rotate_about(p, center, deg: float) -> tuple[float, float]:
    """(x, z) of floor point `p` turned by `deg` degrees about `center` (same sense as a yaw)."""
    a = np.deg2rad(deg)
    d = np.asarray(p, float) - np.asarray(center, float)
    # yaw turns +z towards +x: (x, z) -> (x cos + z sin, -x sin + z cos)
    return (float(center[0] + d[0] * np.cos(a) + d[1] * np.sin(a)),
            float(center[1] - d[0] * np.sin(a) + d[1] * np.cos(a)))


def _pair_frame(rng: np.random.Generator, spread: float):
    """Random pair centre (x, z) and base heading."""
    c = rng.normal(0.0, spread, 2)
    return c, float(rng.uniform(0.0, 360.0))


def _place(c, yaw, local):
    """Scene (x, z) of a point given in the pair frame (x = right of the heading... along _side, z = heading)."""
    local = np.asarray(local, float)
    return tuple(np.asarray(c) + local[0] * _side(yaw) + local[1] * _heading(yaw))


# ---------------------------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------------------------


def hug(duration: float, rng: np.random.Generator, position_jitter: float = 0.4) -> Script:
    """Approach with opening arms, embrace (one person's arms over the partner's shoulders onto the upper back, the
    other's under the partner's arms around the waist), sway with the heads passing each other, lift the hands off,
    step back and lower the arms; repeated with the roles and sides swapped every other time."""
    A, B = _Track(), _Track()
    c, yaw0 = _pair_frame(rng, position_jitter)
    t = 0.0
    over = 0
    while t < duration:
        yaw = yaw0 + float(rng.normal(0, 20))
        gap0 = float(rng.uniform(1.3, 1.7))  # start distance between pelvises (m)
        close = float(rng.uniform(0.22, 0.28))  # pelvis distance in the embrace (the separation solver refines it)
        ya, yb = yaw, yaw + 180.0
        pa0, pb0 = _place(c, yaw, (0, -gap0 / 2)), _place(c, yaw, (0, gap0 / 2))
        lead = "left" if over == 0 else "right"
        sgn = 1.0 if lead == "left" else -1.0
        pa1, pb1 = _place(c, yaw, (0.0, -close / 2)), _place(c, yaw, (0.0, close / 2))
        base = stand()
        A.add(t, Pose(pa0, ya, joints=base))
        B.add(t, Pose(pb0, yb, joints=base))
        t_walk = t + float(rng.uniform(0.4, 0.8))
        t_arr = t_walk + float(rng.uniform(1.4, 1.9))
        A.add(t_walk, Pose(pa0, ya, joints=base))
        B.add(t_walk, Pose(pb0, yb, joints=base))
        # Arms open during the last steps of the approach.
        open_arms = arm("left", az=35, el=-10) | arm("right", az=35, el=-10) | elbow("left", 30) | elbow("right", 30)
        _steps(A, t_walk, t_arr, pa0, pa1, ya, base)
        _steps(B, t_walk, t_arr, pb0, pb1, yb, base)
        for trk in (A, B):  # the last step keyframe carries the open arms
            trk.keys[-1] = (trk.keys[-1][0], trk.keys[-1][1].with_(joints=open_arms))
        # Embrace: the "over" person's arms go over the partner's shoulders onto the upper back, the "under"
        # person's arms under the partner's arms around the waist onto the lower back. Heads turn and tilt to
        # opposite sides (each to its own `lead` side) so they pass each other. The elbows point out and forward
        # (towards the partner's flanks) so the forearms wrap around the back instead of cutting it.
        over_t, under_t = (A, B) if over == 0 else (B, A)
        hd = head(turn=50 * sgn, tilt=18 * sgn)
        legs_a = leg("left", flex=6, knee=10, abd=6) | leg("right", flex=-4, knee=8, abd=8)
        legs_b = leg("left", flex=-4, knee=8, abd=8) | leg("right", flex=6, knee=10, abd=6)
        up = arm("left", az=70, el=25) | arm("right", az=70, el=25) | elbow("left", 70) | elbow("right", 70)
        down = arm("left", az=70, el=-30) | arm("right", az=70, el=-30) | elbow("left", 80) | elbow("right", 80)
        c_up = {"left": Contact("upper_back_right", pole=(1.0, 0.4, 0.6)),
                "right": Contact("upper_back_left", pole=(1.0, 0.4, 0.6))}
        c_down = {"left": Contact("lower_back_right", pole=(1.0, -0.5, 0.6)),
                  "right": Contact("lower_back_left", pole=(1.0, -0.5, 0.6))}
        body = {id(over_t): spine(flex=3, bend=4 * sgn) | hd | up, id(under_t): spine(flex=6, bend=4 * sgn) | hd | down}
        conts = {id(over_t): c_up, id(under_t): c_down}
        legs = {id(A): legs_a, id(B): legs_b}
        t_reach = t_arr + float(rng.uniform(0.3, 0.5))
        t_hold = t_reach + float(rng.uniform(0.4, 0.6))
        roles = [(trk, legs[id(trk)] | body[id(trk)], conts[id(trk)]) for trk in (A, B)]
        for trk, bod, cont in roles:
            trk.add(t_reach, trk.last.with_(joints=base | bod,
                                            contacts={k: dataclasses.replace(v, weight=0.7) for k, v in cont.items()}))
            trk.add(t_hold, trk.last.with_(joints=base | bod, contacts=cont))
        # Sway: the pair rocks, turning together a few degrees each way.
        ts = t_hold
        mid = 0.5 * (np.asarray(pa1) + np.asarray(pb1))
        for k in range(int(rng.integers(3, 6))):
            ts += float(rng.uniform(0.7, 1.0))
            amp = float(rng.uniform(5, 10)) * (1 if k % 2 == 0 else -1)
            for trk, bod, cont in roles:
                y0 = ya if trk is A else yb
                # The pair turns as one body: positions rotate about the pair's centre with the headings.
                p1 = pa1 if trk is A else pb1
                trk.add(ts, trk.last.with_(root=_rotate_about(p1, mid, amp), yaw=y0 + amp,
                                           joints=base | bod | spine(flex=5, bend=4 * sgn + 0.3 * amp)))
        # Release: hands lift off the back (clearance grows), then slide out past the flanks while the pair steps
        # back, arms open, then the arms come down.
        t_lift = ts + float(rng.uniform(0.5, 0.8))
        for trk, bod, cont in roles:
            lift = {k: dataclasses.replace(v, clearance=0.07) for k, v in cont.items()}
            trk.add(t_lift, trk.last.with_(yaw=ya if trk is A else yb, joints=base | bod, contacts=lift))
        t_back = t_lift + float(rng.uniform(1.0, 1.3))
        pa2, pb2 = _place(c, yaw, (0, -gap0 / 2.4)), _place(c, yaw, (0, gap0 / 2.4))
        off = {"left": None, "right": None}
        for trk, bod, cont in roles:
            n0 = len(trk.keys)
            _steps(trk, t_lift, t_back, pa1 if trk is A else pb1, pa2 if trk is A else pb2, ya if trk is A else yb,
                   base | open_arms, contacts=off)
            # The lifted hands stay on target while the bodies part, fading out over the steps (so they come
            # round the partner's flanks instead of sweeping through the partner).
            steps = trk.keys[n0:]
            for k, (tk, pk) in enumerate(steps):
                w = max(0.0, 1.0 - (k + 1) / max(len(steps) - 1, 1))
                lift = {h: (dataclasses.replace(v, clearance=0.07 + 0.1 * (1 - w), weight=w) if w > 0 else None)
                        for h, v in cont.items()}
                trk.keys[n0 + k] = (tk, pk.with_(contacts=lift))
        t = t_back + float(rng.uniform(0.5, 0.9))
        A.add(t, A.last.with_(joints=base))
        B.add(t, B.last.with_(joints=base))
        over = 1 - over
    return Script(keys=[A.keys, B.keys], movable=[0.5, 0.5])


def wrestle(duration: float, rng: np.random.Generator, position_jitter: float = 0.4) -> Script:
    """Grappling on the ground: A on the back, B on top alternating between mount (kneeling astride A's hips,
    hands on A's chest; A frames B's hips, bridges and turns) and guard (kneeling between A's legs, A's legs around
    B's waist; B posts the hands on A's hips, A pulls on B's chest from inside B's arms). In each hold one person's
    arms stay inside or below the other's: hands on each other's chests made the four forearms cross between the
    chests, hands through forearms."""
    A, B = _Track(), _Track()
    c, yaw = _pair_frame(rng, position_jitter * 0.5)
    t = 0.0
    # A lies on the back along the heading; pelvis at the pair centre, head towards -heading.
    pa = _place(c, yaw, (0.0, 0.0))
    lying = dict(arm("left", az=20, el=-40) | arm("right", az=20, el=-40) | elbow("left", 60) | elbow("right", 60)
                 | leg("left", flex=8, knee=15, abd=14) | leg("right", flex=8, knee=15, abd=14) | head(flex=25))
    # Kneeling over A: thighs vertical-ish, knees on the floor beside A's hips, trunk leaning forward.
    kneel = dict(leg("left", flex=25, knee=105, abd=45, ankle=-40) | leg("right", flex=25, knee=105, abd=45, ankle=-40)
                 | spine(flex=35) | head(flex=-15) | arm("left", az=80, el=-35) | arm("right", az=80, el=-35)
                 | elbow("left", 50) | elbow("right", 50))  # hands held above A's belly until they reach
    guard_a = dict(lying | leg("left", flex=70, knee=85, abd=50) | leg("right", flex=70, knee=85, abd=50))
    guard_b = dict(leg("left", flex=30, knee=100, abd=14, ankle=-40) | leg("right", flex=30, knee=100, abd=14,
                   ankle=-40) | spine(flex=30) | head(flex=-10) | arm("left", az=80, el=-45)
                   | arm("right", az=80, el=-45) | elbow("left", 15) | elbow("right", 15))
    b_on_chest = {"left": Contact("chest_right", pole=(1.0, 0.0, -1.0)),
                  "right": Contact("chest_left", pole=(1.0, 0.0, -1.0))}
    # A frames B's hips (the escape from the mount: hands on B's flanks, elbows low by the floor), so that A's arms
    # run under and outside B's, towards A's feet, while B's come down onto A's chest: the arms do not cross.
    a_frame_hips = {"left": Contact("waist_right", pole=(1.0, -0.3, -1.0)),
              "right": Contact("waist_left", pole=(1.0, -0.3, -1.0))}
    # In the guard B posts the hands on A's hips (posture up) and A pulls on B's chest from inside B's arms.
    b_on_hips = {"left": Contact("waist_right", pole=(1.0, 0.0, -1.0)),
                 "right": Contact("waist_left", pole=(1.0, 0.0, -1.0))}
    a_grip = {"left": Contact("chest_right", pole=(1.0, -1.0, 0.3)),
              "right": Contact("chest_left", pole=(1.0, -1.0, 0.3))}
    mount_at = _place(c, yaw, (0.0, 0.10))  # B's pelvis a little towards A's head from A's pelvis
    guard_at = _place(c, yaw, (0.0, 0.62))  # B between A's knees (towards A's feet)
    A.add(t, Pose(pa, yaw, pitch=-90, joints=lying))
    B.add(t, Pose(mount_at, yaw + 180, joints=kneel))
    mode = 0
    while t < duration:
        hold = float(rng.uniform(0.8, 1.4))
        if mode == 0:  # mount: B pins A's chest; A frames B's hips and bridges
            B.add(t + 0.5, Pose(mount_at, yaw + 180 + rng.normal(0, 8), joints=kneel, contacts=b_on_chest))
            A.add(t + 0.5, Pose(pa, yaw, pitch=-90, joints=lying, contacts=a_frame_hips))
            t += 0.5 + hold
            bridge = float(rng.uniform(8, 16))
            A.add(t, Pose(pa, yaw, pitch=-90, roll=float(rng.choice([-1, 1])) * bridge, joints=lying | spine(flex=-10),
                          contacts=a_frame_hips))
            B.add(t, Pose(mount_at, yaw + 180 + rng.normal(0, 10), joints=kneel | spine(flex=40, bend=rng.normal(0, 8)),
                          contacts=b_on_chest))
            t += hold
            A.add(t, Pose(pa, yaw, pitch=-90, joints=lying, contacts=a_frame_hips))
            B.add(t, Pose(mount_at, yaw + 180, joints=kneel, contacts=b_on_chest))
        else:  # guard: B backs off between A's legs; A's legs wrap B's waist, B posts on A's hips, A pulls B's chest
            t_move = t + float(rng.uniform(1.0, 1.4))
            B.add(t_move, Pose(guard_at, yaw + 180, joints=guard_b, contacts={"left": None, "right": None}))
            A.add(t_move, Pose(pa, yaw, pitch=-90, joints=guard_a, contacts={"left": None, "right": None}))
            t = t_move + hold
            B.add(t, Pose(guard_at, yaw + 180 + rng.normal(0, 8), joints=guard_b | spine(flex=34),
                          contacts=b_on_hips))
            A.add(t, Pose(pa, yaw, pitch=-90, roll=rng.normal(0, 6), joints=guard_a, contacts=a_grip))
            t += hold
            B.add(t, Pose(guard_at, yaw + 180, joints=guard_b, contacts=b_on_hips))
            A.add(t, Pose(pa, yaw, pitch=-90, joints=guard_a, contacts=a_grip))
            t_back = t + float(rng.uniform(1.0, 1.4))
            B.add(t_back, Pose(mount_at, yaw + 180, joints=kneel, contacts={"left": None, "right": None}))
            A.add(t_back, Pose(pa, yaw, pitch=-90, joints=lying, contacts={"left": None, "right": None}))
            t = t_back
        mode = 1 - mode
    return Script(keys=[A.keys, B.keys], movable=[0.0, 1.0])


def dance(duration: float, rng: np.random.Generator, position_jitter: float = 0.4) -> Script:
    """Closed-hold partner dance (waltz-like): A's right hand on B's lower back (the arm under B's left arm), B's
    left hand on A's right shoulder (the arm over A's), A's left and B's right hands joined at the hold point; the
    couple takes the hold in two stages (B's left arm up and the hold arms out first, then A's right arm in under
    it) and turns with box steps (A's stepping foot goes forward as B's foot on that side goes back, A's outside
    foot a little outwards)."""
    A, B = _Track(), _Track()
    c, yaw = _pair_frame(rng, position_jitter)
    # Partners stand offset, each `lateral` / 2 to the partner's left: A's right shoulder (the under arm's) comes
    # outside B's left flank.
    dist = float(rng.uniform(0.30, 0.36))
    lateral = 0.10
    # A's right arm goes under B's left arm around B's waist, the elbow forward by B's flank (as the hug's arms
    # under), the hand on B's lower back; B's left arm goes up and over, elbow raised, the hand on A's right
    # shoulder. The two arms on that side stay apart vertically (an arm stacked right on top of the other, hand on
    # the shoulder blade and forearm on the partner's upper arm, went through it). Elevations -40 / +35 deg (were
    # -30 / +25: 180 frames, seed 1, frames over 5 mm after the de-penetration 21 -> 13).
    hold_a = (arm("right", az=70, el=-40) | elbow("right", 80) | arm("left", az=-5, el=15) | elbow("left", 30)
              | spine(flex=-3) | head(turn=25, flex=-5))
    hold_b = (arm("left", az=70, el=35) | elbow("left", 90) | arm("right", az=-5, el=15) | elbow("right", 30)
              | spine(flex=-6, bend=-5) | head(turn=30, flex=-10))
    # Where the hand cannot reach its anchor (partners of different heights: 180 frames, seed 1 has A's shoulders
    # 25 cm above B's), A's hand slides from B's lower back towards her flank and up it, and B's from the top of A's
    # shoulder down onto his upper arm. Without that, the wrist targets were on median 1.1-1.3 x the arm's length
    # away (seeds 0-2) and the straightened arm went through the partner (hands up to 100 mm inside before the
    # final de-penetration, which then oscillated between rounds as those hands popped back in).
    ca = {"right": Contact("lower_back_left", pole=(1.0, -0.5, 0.6),
                           fallback=("lower_back_flank_left", "mid_back_flank_left", "upper_back_flank_left")),
          "left": Contact("hold", pole=(1.0, -1.0, -0.3))}
    cb = {"left": Contact("shoulder_right", pole=(1.0, 0.4, 0.6), fallback=("deltoid_right",)),
          "right": Contact("hold", pole=(1.0, -1.0, -0.3))}
    t = 0.0
    base = stand()
    ya = yaw
    center = np.asarray(c, float)

    def spots(ya, center):
        pa = _place(center, ya, (-lateral / 2, -dist / 2))
        pb = _place(center, ya, (lateral / 2, dist / 2))
        return pa, pb

    pa, pb = spots(ya, center)
    # The partners start a little farther apart and close in while taking the hold: standing at the hold's distance
    # from the first frame, the hanging hands reached into the partner's hips.
    A.add(t, Pose(_place(center, ya, (-lateral / 2, -dist / 2 - 0.12)), ya, joints=base))
    B.add(t, Pose(_place(center, ya, (lateral / 2, dist / 2 + 0.12)), ya + 180, joints=base))
    # Taking the hold: first B's left arm rises out to the side while A's right arm stays down by the side (the
    # forearm only a little forward) and the hold arms open out sideways, wide apart; then A's right arm comes in under
    # B's raised arm and B's hand comes down onto A's shoulder. Blending straight from the standing pose swung the
    # two elbows on that side through each other, and the joined hands through each other, on their way.
    t += 0.5
    A.add(t, Pose(pa, ya, joints=base | arm("right", az=5, el=-70) | elbow("right", 25) | arm("left", az=-10, el=10)
                  | elbow("left", 20)))
    B.add(t, Pose(pb, ya + 180, joints=base | arm("left", az=-5, el=35) | elbow("left", 20)
                  | arm("right", az=-10, el=10) | elbow("right", 20)))
    t += 0.6
    A.add(t, Pose(pa, ya, joints=base | hold_a, contacts=ca))
    B.add(t, Pose(pb, ya + 180, joints=base | hold_b, contacts=cb))
    beat = float(rng.uniform(0.42, 0.5))  # seconds per step (waltz at ~ 40 bars/min: 3 steps/bar)
    k = 0
    while t < duration:
        # One step: the couple travels a little and turns (1/4 turn per bar of 3 steps, "rotating box").
        ya += float(rng.uniform(20, 35))
        center = center + 0.12 * _heading(ya + 60 * (1 if k % 2 else -1))
        pa, pb = spots(ya, center)
        lead = "left" if k % 2 == 0 else "right"
        trail = "right" if lead == "left" else "left"
        # A's lead foot steps forward into the space B's trail foot (the one on that side) steps back from; B's
        # other foot stays under the pelvis (two legs striding towards each other on the same side would meet).
        # A's right foot is the outside one (the partners stand offset): it steps a little outwards past B's left.
        step_a = leg(lead, flex=12, knee=10, abd=5 if lead == "right" else 0) | leg(trail, flex=-8, knee=14)
        step_b = leg(trail, flex=-12, knee=14) | leg(lead, flex=2, knee=8)
        mid = t + beat * 0.5
        A.add(mid, Pose(pa, ya, joints=base | hold_a | step_a | spine(bend=4 if k % 2 else -4), contacts=ca))
        B.add(mid, Pose(pb, ya + 180, joints=base | hold_b | step_b, contacts=cb))
        t += beat
        A.add(t, Pose(pa, ya, joints=base | hold_a, contacts=ca))
        B.add(t, Pose(pb, ya + 180, joints=base | hold_b, contacts=cb))
        k += 1
        if k % 12 == 0 and t < duration - 3:  # an underarm turn: B spins under the joined hands
            t_turn = t + 4 * beat
            B.add(t + 2 * beat, Pose(pb, ya + 180 + 180, joints=base | arm("right", az=10, el=60) | elbow("right", 40),
                                     contacts={"left": None, "right": Contact("hold", pole=(1.0, -1.0, 0.0))}))
            A.add(t + 2 * beat, Pose(pa, ya, joints=base | arm("left", az=10, el=55) | elbow("left", 40),
                                     contacts={"right": None, "left": Contact("hold", pole=(1.0, -1.0, 0.0))}))
            t = t_turn
            A.add(t, Pose(pa, ya, joints=base | hold_a, contacts=ca))
            B.add(t, Pose(pb, ya + 180 + 360, joints=base | hold_b, contacts=cb))  # yaw continuous after the spin
    # Unwrap B's yaw so that every later keyframe continues after the spins (yaw is interpolated as a rotation, so
    # only the relative angle matters; keeping it explicit makes the spin direction deterministic).
    return Script(keys=[A.keys, B.keys], movable=[0.5, 0.5])


def fencing(duration: float, rng: np.random.Generator, position_jitter: float = 0.4) -> Script:
    """Two fencers on a strip: en-garde stance (side-on, knees bent, weapon arm forward, back arm raised),
    advances and retreats keeping distance, lunges whose hand stops a few centimetres short of the partner's chest,
    and now and then a corps-a-corps (bodies meet)."""
    A, B = _Track(), _Track()
    c, yaw = _pair_frame(rng, position_jitter)
    ya, yb = yaw, yaw + 180

    def garde(side_yaw_sign: float) -> dict:
        # Side-on: pelvis turned 50 degrees to the left, trunk turned back towards the opponent.
        return (leg("right", flex=35, knee=45, abd=5, ankle=15, rot=10) | leg("left", flex=-5, knee=45, abd=20, rot=40)
                | spine(twist=35, flex=5) | head(turn=15)
                | arm("right", az=75, el=-25) | elbow("right", 60)
                | arm("left", az=-20, el=45, twist=30) | elbow("left", 100))

    lunge = (leg("right", flex=80, knee=80, ankle=20, rot=10) | leg("left", flex=-30, knee=5, abd=15, rot=40)
             | spine(twist=40, flex=10) | head(turn=15) | arm("right", az=88, el=-5) | elbow("right", 5)
             | arm("left", az=-60, el=-30) | elbow("left", 10))
    turn = -50.0  # pelvis heading offset of the side-on stance (right foot leads)
    gap = float(rng.uniform(2.4, 3.0))
    xa, xb = -gap / 2, gap / 2
    t = 0.0
    A.add(t, Pose(_place(c, yaw, (0, xa)), ya + turn, joints=garde(1)))
    B.add(t, Pose(_place(c, yaw, (0, xb)), yb + turn, joints=garde(1)))
    while t < duration:
        r = rng.random()
        if r < 0.5:  # footwork: one advances, the other retreats
            d = float(rng.uniform(0.15, 0.35)) * (1 if rng.random() < 0.5 else -1)
            t1 = t + float(rng.uniform(0.4, 0.7))
            xa = np.clip(xa + d, -2.0, -0.55)
            xb = np.clip(xb + d, 0.55, 2.0)
            step = leg("right", flex=50, knee=55, ankle=15, rot=10)
            A.add((t + t1) / 2, Pose(_place(c, yaw, (0, xa - d / 2)), ya + turn, joints=garde(1) | step))
            B.add((t + t1) / 2, Pose(_place(c, yaw, (0, xb - d / 2)), yb + turn, joints=garde(1) | step))
            A.add(t1, Pose(_place(c, yaw, (0, xa)), ya + turn, joints=garde(1)))
            B.add(t1, Pose(_place(c, yaw, (0, xb)), yb + turn, joints=garde(1)))
            t = t1
        elif r < 0.85:  # a lunge by one fencer towards the other's chest, then recovery
            atk, dfn = (A, B) if rng.random() < 0.5 else (B, A)
            xs = xa if atk is A else xb
            other = xb if atk is A else xa
            dirn = 1.0 if atk is A else -1.0
            # Close the distance first if needed so that the extended hand gets near the target.
            reach = float(rng.uniform(1.05, 1.25))
            xl = other - dirn * reach
            y_atk = ya if atk is A else yb
            tl = t + float(rng.uniform(0.35, 0.5))
            atk.add(tl, Pose(_place(c, yaw, (0, xl)), y_atk + turn * 0.8, joints=lunge,
                             contacts={"right": Contact("chest_left", weight=0.9, clearance=0.05,
                                                        pole=(1.0, -0.3, 0.0))}))
            dfn.add(tl, dfn.last.with_(joints=spine(twist=45, flex=-8)))
            tr = tl + float(rng.uniform(0.5, 0.8))
            atk.add(tr, Pose(_place(c, yaw, (0, xs)), y_atk + turn, joints=garde(1), contacts={"right": None}))
            dfn.add(tr, dfn.last.with_(joints=garde(1)))
            t = tr
        else:  # corps-a-corps: both close in, chests meet, then separate
            t1 = t + float(rng.uniform(0.6, 0.9))
            # Weapon arms lifted up and back out of the way (they are not contact-solved), back arms down behind.
            clinch = (spine(twist=15) | arm("right", az=-20, el=55) | elbow("right", 70) | arm("left", az=-40, el=-60)
                      | elbow("left", 15))
            A.add(t1, Pose(_place(c, yaw, (0.05, -0.17)), ya + turn * 0.4, joints=garde(1) | clinch))
            B.add(t1, Pose(_place(c, yaw, (-0.05, 0.17)), yb + turn * 0.4, joints=garde(1) | clinch))
            t2 = t1 + float(rng.uniform(0.5, 0.8))
            A.add(t2, A.last.with_())
            B.add(t2, B.last.with_())
            t = t2 + float(rng.uniform(0.6, 0.9))
            A.add(t, Pose(_place(c, yaw, (0, xa)), ya + turn, joints=garde(1)))
            B.add(t, Pose(_place(c, yaw, (0, xb)), yb + turn, joints=garde(1)))
    return Script(keys=[A.keys, B.keys], movable=[0.5, 0.5])


def bystander_keys(duration: float, rng: np.random.Generator, radius: float) -> list[tuple[float, Pose]]:
    """A person walking slowly around the arena on a circle of `radius` (m), pausing now and then."""
    tr = _Track()
    a = float(rng.uniform(0, 2 * np.pi))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    pos = lambda a: (radius * np.sin(a), radius * np.cos(a))  # noqa: E731
    # Walking tangentially: heading = azimuth +- 90 degrees.
    head_of = lambda a: np.rad2deg(a) + 90.0 * direction  # noqa: E731
    tr.add(0.0, Pose(pos(a), head_of(a), joints=stand()))
    t = 0.0
    while t < duration:
        seg = float(rng.uniform(2.0, 4.0))
        a1 = a + direction * 0.35 * seg / radius
        _steps(tr, t, t + seg, pos(a), pos(a1), head_of((a + a1) / 2), stand(), period=1.1)
        t += seg
        a = a1
        if rng.random() < 0.3:
            t += float(rng.uniform(0.5, 1.5))
            tr.add(t, tr.last.with_(joints=stand() | head(turn=rng.normal(0, 30))))
    return tr.keys


#: Scenario name -> script builder `(duration s, rng, position_jitter) -> Script`.
SCENARIOS: dict[str, Callable[..., Script]] = {"hug": hug, "wrestle": wrestle, "dance": dance, "fencing": fencing}
