"""Settings of the synthetic close-interaction capture generator: camera rig, motion, detector noise.

Same conventions as `h4djax.config`: frozen dataclasses are the single source of truth, `configs/synth_*.toml`
presets map 1:1 onto them (table = nested dataclass, key = field, unknown key = error naming it) and are loaded with
`load_synth_config`, which reuses `h4djax.config.from_dict`. Host-side only (the generator is numpy + a jitted body
forward pass).

This module deliberately does NOT use ``from __future__ import annotations``: `h4djax.config.from_dict` resolves
string annotations in `h4djax.config`'s namespace, where these classes do not exist; real type objects work as is.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h4djax.config import _merge, from_dict, to_dict
from h4djax.errors import ConfigError

# COCO keypoint OKS sigmas (PIPELINE.md 1.2): the per-keypoint spread of human annotations, which is also the
# per-keypoint spread of detector errors (face points tight, hips loose). Used relative to their mean.
COCO_SIGMAS = (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
_MEAN_SIGMA = sum(COCO_SIGMAS) / len(COCO_SIGMAS)
COCO_SIGMA_SCALE = tuple(round(s / _MEAN_SIGMA, 4) for s in COCO_SIGMAS)


@dataclass(frozen=True)
class RigConfig:
    """A Harmony4D-like rig: N static GoPros roughly equidistant around the arena, all looking at its centre."""

    num_cameras: int = 20
    """Cameras in the rig (Harmony4D: 20+); any N from 2 to 64."""
    layout: str = "ring"
    """"ring": one ring at `height`; "dome": `dome_rings` rings whose elevation rises towards
    `dome_max_elevation_deg`."""
    arena_size: float = 5.0
    """Diameter of the arena floor (m); Harmony4D arenas are 4-6 m across."""
    radius_margin: float = 1.0
    """Cameras stand this far (m) outside the arena edge."""
    radius_jitter: float = 0.15
    """Std of the per-camera distance from the centre (m)."""
    azimuth_jitter_deg: float = 3.0
    """Std of the per-camera azimuth around the equidistant position (degrees)."""
    height: float = 1.7
    """Camera height above the floor for the ring layout (m; tripods)."""
    height_jitter: float = 0.12
    """Std of the camera height (m)."""
    dome_rings: int = 2
    dome_max_elevation_deg: float = 40.0
    """Elevation of the top dome ring seen from the arena centre (the bottom ring is at `height`)."""
    look_at_height: float = 0.9
    """Height (m) of the point the cameras aim at (the arena centre, about hip height)."""
    look_at_jitter: float = 0.3
    """Std (m) of the aim point around the arena centre (cameras are pointed by hand)."""
    roll_jitter_deg: float = 1.5
    fraction_4k: float = 0.5
    """Share of 3840x2160 cameras; the others are 1920x1080 (GoPro video modes)."""
    fisheye_fraction: float = 0.5
    """Share of cameras calibrated with cv2.fisheye (Kannala-Brandt, as Harmony4D's COLMAP OPENCV_FISHEYE); the
    others use the OpenCV radial-tangential model (GoPro "linear" lens mode)."""
    hfov_opencv_deg: float = 80.0
    """Horizontal field of view of the OpenCV-model cameras (GoPro linear mode is about 80-87 degrees)."""
    hfov_fisheye_deg: float = 110.0
    """Horizontal field of view of the fisheye cameras (GoPro wide mode is about 110-120 degrees)."""
    hfov_jitter_deg: float = 3.0
    principal_jitter: float = 0.005
    """Std of the principal point offset as a fraction of the image width."""
    opencv_dist: tuple[float, ...] = (-0.04, 0.015, 0.0005, -0.0005, -0.002)
    """Nominal k1, k2, p1, p2, k3 of the OpenCV cameras (mild barrel, as a linearised GoPro)."""
    fisheye_dist: tuple[float, ...] = (0.03, -0.012, 0.004, -0.0008)
    """Nominal k1..k4 of the fisheye cameras."""
    dist_jitter: float = 0.25
    """Relative std of every distortion coefficient around its nominal value."""


@dataclass(frozen=True)
class MotionConfig:
    """The scripted interaction: keyframed body-model poses, interpolated smoothly, with contact IK."""

    scenario: str = "hug"
    """One of `h4djax.synth.scenarios.SCENARIOS`: hug, wrestle, dance, fencing."""
    num_frames: int = 600
    fps: float = 30.0
    """Frame rate (Harmony4D videos are 60 fps GoPro footage, annotated at 20-30 fps)."""
    sim_fps: float = 30.0
    """The motion (steps 1-8 of `synth.generate`: contact IK, de-penetration) is simulated at the smallest multiple
    of `fps` that is at least this and subsampled to `fps` (same script, same frame times). The steps' frame strides
    and smoothness terms describe motion sampled like video; at 5 fps (0.2 s between frames) the de-penetration of a
    6 s grappling take left a knee 28-60 mm inside the partner's thigh, at 30 fps 0.6-1.5 mm (3 seeds)."""
    num_people: int = 2
    """People in the scene; the first two interact, any further ones are bystanders walking around them."""
    interpolation: str = "spline"
    """"spline": C1 quaternion spline through the keyframes (Shoemake's Bezier slerp); "slerp": piecewise slerp."""
    tempo: float = 1.0
    """Playback speed of the keyframe script (>1 = faster)."""
    timing_jitter: float = 0.08
    """Relative std of every keyframe interval."""
    pose_jitter_deg: float = 4.0
    """Std of a random rotation added to every keyframed joint (degrees), so no two takes are identical."""
    sway_deg: float = 1.5
    """Amplitude of a slow continuous sway on the spine/neck/arms (degrees), the ever-present small motion."""
    betas_std: float = 1.0
    """Std of the random body shapes (betas are unit-variance in the shipped model); clipped to +-2.5 std."""
    position_jitter: float = 0.4
    """Std (m) of where in the arena the pair stands, around the centre."""
    contact_clearance: float = 0.012
    """Gap (m) between a hand (palm surface) and the partner's skin at a contact target."""
    separation_margin: float = 0.01
    """Body-to-body gap (m, arms excluded) enforced by the separation solver."""
    separation_iters: int = 4
    """Push rounds of the separation solver (each: inside test, push along the line between the torsos)."""
    separation_stride: int = 2
    """The separation solver runs on every n-th frame (batched); offsets are interpolated in between."""
    contact_rounds: int = 3
    """Rounds of the contact check: each tests the arms' capsule proxies against the partner's skin and lifts the
    palm by the penetration found."""
    verify_rounds: int = 2
    """Rounds of the final contact check on the posed meshes (forearm and hand vertices against the partner's
    whole mesh, arms included), each lifting the palm by the depth found; 0 = skip."""
    contact_check_stride: int = 4
    """Check every n-th frame of a contact (the correction is spread over the frames in between)."""
    depenetrate_rounds: int = 8
    """Rounds of the final de-penetration on the real meshes (`synth.depenetrate`): every vertex of one person
    inside the other (or within `depenetrate_guard` of its skin) becomes a constraint of one smooth correction of
    all joints over all frames; 0 = skip."""
    depenetrate_stride: int = 2
    """The de-penetration tests every n-th vertex of each person against the other's mesh."""
    depenetrate_margin: float = 0.003
    """Gap (m) the de-penetration asks for between a corrected vertex and the partner's skin."""
    depenetrate_guard: float = 0.006
    """Vertices outside the partner by less than this (m) are held outside by the correction too."""
    depenetrate_tolerance: float = 0.002
    """The de-penetration stops when no tested vertex is deeper than this (m)."""
    depenetrate_steps: int = 150
    """L-BFGS iterations of each de-penetration solve."""


@dataclass(frozen=True)
class NoiseConfig:
    """A 2D detector error model (top-down HRNet/ViTPose-like) applied to the projected ground-truth keypoints."""

    enabled: bool = True
    """False: keypoints are the exact projections of the ground truth (confidence 1 where visible)."""
    pixel_sigma: float = 0.006
    """Std of the per-keypoint pixel noise as a fraction of the person's height in the image (px / px)."""
    joint_sigma_scale: tuple[float, ...] = COCO_SIGMA_SCALE
    """Per-COCO-keypoint multiplier of `pixel_sigma` (default: COCO OKS sigmas over their mean)."""
    temporal_corr: float = 0.5
    """AR(1) coefficient of the noise across frames (detector jitter is partly persistent)."""
    conf_base: float = 0.93
    """Confidence of a keypoint with zero error."""
    conf_error_slope: float = 0.06
    """Confidence lost per unit of normalized error (error / expected std): confidence correlates with error."""
    conf_noise: float = 0.04
    """Std of independent confidence noise."""
    occlusion: bool = True
    """Test visibility of each keypoint against both people's meshes in every camera (coarse depth buffer)."""
    depth_grid: int = 48
    """Cells along each side of the per-person depth buffer (a cell is about the person's height / depth_grid)."""
    depth_vertex_stride: int = 4
    """Splat every n-th mesh vertex into the depth buffers."""
    self_occlusion_margin: float = 0.10
    """A keypoint counts as hidden by its own body only if it lies this far (m) behind the body surface (joints
    such as hips are inside the body)."""
    mutual_occlusion_margin: float = 0.03
    """A keypoint counts as hidden by the other person if it lies this far (m) behind that person's surface."""
    occluded_conf_scale: float = 0.35
    """Confidence multiplier of an occluded keypoint."""
    occluded_sigma_scale: float = 2.5
    """Noise multiplier of an occluded keypoint (detectors guess hidden joints)."""
    occluded_jump_prob: float = 0.25
    """Probability that a keypoint hidden by the other person lands on the occluder instead (the nearest keypoint
    of the occluding person, with a mid-high confidence)."""
    swap_prob: float = 0.015
    """Per left/right keypoint pair, probability that the detector swaps them (confidence unchanged)."""
    flip_prob: float = 0.005
    """Per person-view, probability of a whole-body left/right flip (back-facing people)."""
    outlier_prob: float = 0.01
    """Per keypoint, probability of a gross outlier: uniform inside the person's box grown by 50%."""
    outlier_conf: tuple[float, float] = (0.3, 0.8)
    """Confidence range of gross outliers."""
    miss_prob: float = 0.004
    """Per person-view-frame, probability that a missed-detection run starts (all keypoints conf 0)."""
    miss_duration: int = 6
    """Frames a missed detection lasts."""
    miss_kpt_prob: float = 0.01
    """Per keypoint, probability of a dropped keypoint (conf 0)."""
    contact_swap_prob: float = 0.2
    """Probability that a keypoint IN CONTACT (see `contact_pickup_radius`) takes the position of the same keypoint
    of the other person: top-down detectors on overlapping boxes mix up limbs that touch. The overall pick-up rate
    is this x the share of keypoints in contact (a few % of all observations in a hug); keypoints away from the
    partner are never picked up."""
    contact_pickup_radius: float = 0.1
    """A keypoint is in contact when the same keypoint of another person (boxes overlapping) lies within this
    fraction of its person's size (longer side of the box, px) in the image."""
    min_visible_conf: float = 0.0
    """Confidences are clipped to [this, 1] for reported keypoints; truncated (out-of-image) keypoints get 0."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything `h4d synth` needs besides the output directory."""

    rig: RigConfig = field(default_factory=RigConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    seed: int = 0
    """Master seed: rig, shapes, motion variations and noise all derive from it (same seed, same bytes)."""


def load_synth_config(path: str | Path | None = None, base: SynthConfig | None = None) -> SynthConfig:
    """Load a TOML preset onto the defaults (or onto `base`); tables override field by field."""
    base = base or SynthConfig()
    if path is None:
        return base
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return from_dict(SynthConfig, _merge(to_dict(base), data), where=str(path))


def override(cfg: SynthConfig, section: str, **values: Any) -> SynthConfig:
    """`cfg` with fields of one section replaced (values of None are ignored), e.g. from CLI flags."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return cfg
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
