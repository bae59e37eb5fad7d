"""Configuration: nested frozen dataclasses are the single source of truth.

`configs/*.toml` presets map 1:1 onto these dataclasses (table = nested dataclass, key = field); an unknown key is
an error naming the key and the table. Defaults are the Harmony4D / EgoHumans values documented in
`PIPELINE.md` (section numbers cited per field). Host-side only: the JAX program receives the numeric settings as
traced arrays (so changing a weight never recompiles) and the structural ones (iteration counts, joint subsets) as
static arguments.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h4djax.errors import ConfigError


@dataclass(frozen=True)
class FilterConfig:
    """2D filtering (PIPELINE.md 1.2)."""

    min_keypoints: int = 6
    """A pose needs at least this many keypoints above `keypoint_conf` (EgoHumans drops poses with <= 5)."""
    keypoint_conf: float = 0.2
    oks_threshold: float = 0.7
    """Two poses in one view with OKS above this are the same body detected twice (paper 0.7; some configs 0.8)."""
    oks_keep: str = "none"
    """"none": invalidate both poses (EgoHumans); "higher": keep the pose with the higher mean confidence."""


@dataclass(frozen=True)
class TriangulationConfig:
    """Robust triangulation (PIPELINE.md 1.3)."""

    candidate_conf: float = 0.5
    """Views whose keypoint confidence exceeds this are candidates."""
    inlier_eps: float = 0.01
    """Inlier threshold on e_v = 0.5 * ||x_v - pi(X)|| in the undistorted normalized image plane."""
    inlier_eps_px: float = 0.0
    """If > 0, the inlier threshold in pixels instead: a view is an inlier when its full pixel-scale distance
    ||x_v - pi(X)|| is below this, i.e. e_v < 0.5 * inlier_eps_px / f per camera (0.01 normalized ~ 0.02 f px)."""
    min_views: int = 2
    """Fewer candidate views than this -> the joint is invalid (EgoHumans MIN_VIEWS: 2 in the paper, 3 in some
    configs)."""
    min_inliers: int = 2
    """Fewer inlier views than this -> the joint is invalid (2 = the reference: every pair's set has 2 views)."""
    refine_iters: int = 3
    """Gauss-Newton iterations on the reprojection residuals after the weighted DLT."""
    huber_delta: float = 1.0
    """Huber scale on e_v in the refinement (1.0 = scipy least_squares' default f_scale used by EgoHumans)."""
    dlt_normalize: bool = True
    """Solve DLT in a world frame centred/scaled on the camera centres (Hartley-Zisserman 4.4.4; float32-safe for
    any world origin). False reproduces the reference's algebraic DLT exactly."""
    frame_chunk: int = 0
    """Frames per jitted chunk to bound memory (0 = automatic from the view-pair count)."""


@dataclass(frozen=True)
class RefineConfig:
    """Whole-sequence 3D refinement (PIPELINE.md 1.4); all weights 1 in the paper."""

    w_limb: float = 1.0
    w_symm: float = 1.0
    w_temporal: float = 1.0
    w_data: float = 1.0
    w_filled: float = 0.1
    """Data-term weight of gap-filled joints (observed joints weigh 1, absent ones 0)."""
    interp_window: int = 10
    """Window (frames) of the polynomial gap filling for invalid joints (EgoHumans): t-5..t+5."""
    interp_order: int = 3
    """Maximum degree of the gap-filling polynomial (least squares; EgoHumans interpolates with order up to 5)."""
    long_gap: str = "linear"
    """Gaps the window does not bridge: "linear" between the nearest valid frames (hold at the ends), "hold", "none"."""
    outlier_sigma: float = 10.0
    """EgoHumans' test (outlier_stat="std"): limb lengths beyond this many standard deviations of the sequence are
    flagged and refilled (<= 0: off)."""
    outlier_stat: str = "mad"
    """Limb-length outlier statistics. "std": mean +- outlier_sigma * std (EgoHumans). "mad" (DEVIATION, default):
    median +- outlier_mad_sigma * 1.4826 MAD. The outliers inflate the std they are tested against: on the hard
    synthetic preset the limb-length std is 5-20x the robust (MAD) sigma, so 10 std never fires and 20-50 cm
    triangulation errors (partner pick-ups) survive, then the optimization spreads them (refined MPJPE was worse
    than the triangulation's). With MAD: 26.7 -> 11.2 mm at 20 cameras."""
    outlier_mad_sigma: float = 5.0
    """Threshold of outlier_stat="mad" in robust standard deviations (1.4826 MAD, floored at 2 mm)."""
    savgol_window: int = 5
    """Savitzky-Golay window (odd; <= savgol_order disables smoothing); scipy mode="interp" at the ends."""
    savgol_order: int = 3
    limb_mode: str = "median"
    """L_limb residual: "temporal" lambda_{t+1}-lambda_t (paper), "mean" lambda_t-mean (EgoHumans code), "median"
    lambda_t-median of the valid (non-outlier) triangulated lengths (robust constant target; the two limbs of a
    symmetric pair share the mean of their medians, consistent with L_symm). DEVIATION: default
    "median": it holds the rigid limbs' lengths exactly constant (std 0.00 mm vs 2.1 mm for "temporal", whose
    Charbonnier |.| lets lengths drift slowly over 600 frames) at about the same MPJPE (hard preset: 11.2 vs 11.0)."""
    temporal_penalty: str = "squared"
    """L_temporal: "squared" ||y_{t+1}-y_t||^2 (EgoHumans code) or "l2" unsquared (paper notation)."""
    free_limbs: tuple[str, ...] = ("l_torso", "r_torso", "l_ear_shoulder", "r_ear_shoulder")
    """Limbs left out of L_limb and L_symm. DEVIATION (the paper constrains all 19): shoulder-hip and ear-shoulder
    are not rigid (spine and neck bend; ground-truth std over time 13-25 mm on the hug preset vs <= 3 mm for the
    bone limbs). Holding them constant biased shoulders, hips and ears by 5-10 mm; () restores the paper."""
    norm_eps: float = 0.001
    """Charbonnier smoothing (m) of the |.| in the limb and symmetry terms (0 = exact |.|)."""
    iters: int = 200
    learning_rate: float = 0.001
    """Adam step (m); L-BFGS uses its line search instead."""
    optimizer: str = "lbfgs"
    """"lbfgs" (optax, line search) or "adam"."""
    linesearch: str = "backtracking"
    """L-BFGS line search: "backtracking" (Armijo; jax.grad through refine is exact) or "zoom" (strong Wolfe, the
    optax.lbfgs default; its interpolated step is treated as a constant by jax.grad)."""
    linesearch_steps: int = 20
    memory_size: int = 5
    """L-BFGS history length (5: same result as 10 after 200 iterations on the bench sequence, ~20% less CPU)."""
    ftol: float = 1e-6
    """Stop when the objective's relative decrease in one iteration is <= ftol (0: always run `iters`)."""


@dataclass(frozen=True)
class StageConfig:
    """One stage of the body fit (PIPELINE.md 1.5, Table 1). Stages are data, not code branches."""

    name: str = "stage"
    free: tuple[str, ...] = ("global_orient", "transl")
    """Parameter groups optimized in this stage: global_orient, transl, body_pose, betas."""
    iters: int = 50
    optimizer: str = "adam"
    """"adam" or "lbfgs" (optax, with zoom line search)."""
    learning_rate: float = 0.05
    w_joint: float = 0.0
    w_reg: float = 0.0
    w_limb: float = 0.0
    w_symm: float = 0.0
    w_temporal: float = 0.0
    w_beta: float = 0.0
    w_collision: float = 0.0
    joints: str = "all"
    """Which keypoints the joint term uses: "all" or "torso" (shoulders and hips, EgoHumans stage 1)."""


def _default_stages() -> tuple[StageConfig, ...]:
    # Table 1 of Harmony4D (PIPELINE.md 1.5); iteration counts from EgoHumans (50 / 20 / 120 per epoch).
    return (
        StageConfig(name="global", free=("global_orient", "transl"), iters=50, optimizer="adam", learning_rate=0.05,
                    w_joint=1.0, joints="torso"),
        StageConfig(name="shape", free=("betas",), iters=20, optimizer="adam", learning_rate=0.05,
                    w_limb=1.0, w_symm=0.2, w_beta=0.005),
        StageConfig(name="pose", free=("global_orient", "transl", "body_pose"), iters=120, optimizer="adam",
                    learning_rate=0.02, w_joint=10.0, w_reg=0.001, w_limb=1.0, w_temporal=1.0, w_collision=1.0),
    )


@dataclass(frozen=True)
class FitConfig:
    """Three-stage body fit (PIPELINE.md 1.5)."""

    epochs: int = 3
    """How often the stage schedule is repeated (EgoHumans: 10; 3 reach the same loss with Adam on our init)."""
    stages: tuple[StageConfig, ...] = field(default_factory=_default_stages)
    correspondence: str = "regressor"
    """Model points matched to COCO keypoints: "regressor" (all 17 from the model's COCO keypoint regressor) or
    "paper" (PIPELINE.md 1.5: face from mesh vertices, body = SMPL joints). See h4djax.fit.fit.model_points."""
    collision_epochs: int = 0
    """Stages with w_collision != 0 evaluate the collision term in the last N epochs only (0 = every epoch, as
    EgoHumans). The term needs the full mesh and the SDF grids, by far the most expensive part of the fit on CPU."""


@dataclass(frozen=True)
class CollisionConfig:
    """Inter-person SDF collision loss (PIPELINE.md 1.6)."""

    grid_size: int = 32
    padding: float = 1.2
    """Scale of the person's bounding box that the grid covers (EgoHumans 1.2)."""
    vertex_stride: int = 1
    """Sample every n-th vertex of the other people (1 = all)."""
    method: str = "sdf"
    """"sdf" (grid, reference behaviour) or "spheres" (inscribed-sphere proxy, faster; docs/collision_report.md)."""
    frame_chunk: int = 0
    """Frames vmapped together when the loss is evaluated over a sequence (memory bound; see h4djax/collision).
    0 = automatic: 1 on CPU (faster there), 64 on GPU/TPU."""
    grid_cube: bool = True
    """True: cube grid over the largest box extent (EgoHumans); False: per-axis padded box (finer on thin axes)."""
    robustifier: float = 0.0
    """Geman-McClure scale in metres on each sampled depth (0 = off, the EgoHumans default)."""
    builder: str = "fast"
    """Grid builder: "fast" (ray parity + exact pruned distance; closed meshes) or "brute" (winding numbers)."""
    n_spheres: int = 128
    """Number of inscribed spheres of the "spheres" proxy."""
    grid_tolerance: float = 0.0
    """Body fit, method "sdf": each person-frame's grid is kept between Adam iterations and rebuilt only when one of
    that person's vertices moved more than this (metres) since it was built; 0 = rebuild whenever anything moved
    (the reference). The grid is a constant of the loss in the reference too; a cached one differs from a fresh one
    by about this distance (h4djax.collision.loss, docs/collision_report.md)."""
    grid_refresh: int = 1
    """Body fit, method "sdf": the grid cache looks for stale grids every n-th Adam iteration only (1 = every
    iteration, the reference). Bounds the grid builds to (needed person-frames) / n per iteration."""


@dataclass(frozen=True)
class DetectConfig:
    """ONNX 2D front end (PIPELINE.md 1.1)."""

    detector: str = "models/blazepose_detector.onnx"
    keypoint_model: str = "models/blazepose_landmark_full.onnx"
    threads: int = 2
    min_score: float = 0.5
    # --- running over a capture (h4djax.detect.pipeline) ---
    tiles: int = 3
    """Square tiles along the long side of each frame on which the person detector also runs (BlazePose letterboxes
    the whole frame to 224 px and mostly reports only the most prominent person); 0 = whole frame only."""
    redetect_every: int = 30
    """Frames between detector runs while every track is found through its projected ROI (0: only on the first
    frame and whenever a track is seen in fewer than min_views views)."""
    roi_from_3d: bool = True
    """ROIs of tracked people come from projecting their last 3D keypoints into each view (Harmony4D near contact);
    False: run the detector on every frame."""
    roi_max_age: int = 5
    """Tracks unseen for more frames than this get no projected ROI (their 3D is too old to crop from)."""
    min_pose_score: float = 0.5
    """A person whose keypoint-model presence score (BlazePose pose flag) is below this is not in that view."""
    # --- identity across views (h4djax.associate) ---
    assoc_conf: float = 0.3
    """Keypoints above this confidence take part in cross-view affinities and reprojection OKS."""
    assoc_min_joints: int = 5
    """Two detections are comparable across views only if they share this many keypoints."""
    assoc_max_dist: float = 0.15
    """Mean ray-to-ray distance (m) over shared keypoints below which two detections may be one person."""
    min_views: int = 2
    """A person needs this many associated views in a frame to be triangulated / tracked (background people seen
    by one camera never become subjects)."""
    reproj_min_oks: float = 0.5
    """A detection joins a triangulated person only if the OKS with the person's projection is at least this."""
    # --- identity over time ---
    track_max_dist: float = 0.5
    """Gate (m, mean 3D keypoint distance) for matching a person to a track seen in the previous frame."""
    track_max_speed: float = 3.0
    """The gate widens by this speed (m/s) times the frames a track was unseen."""
    track_max_missing: int = 30
    """A track unseen for more frames ends (a person coming back later gets a new id)."""
    track_merge_dist: float = 0.1
    """Two tracks closer than this (m, mean 3D keypoint distance) are one person: the younger ends."""
    max_people: int = 2
    """Subjects kept: the most persistent multi-view tracks ((frame, view) observations); 0 = all tracks."""
    min_track_frames: int = 10
    """Tracks shorter than this many frames are never subjects."""
    cache: bool = True
    """Reuse keypoints2d.npz written by a previous run with the same settings and models (config hash)."""


@dataclass(frozen=True)
class Config:
    """Everything `h4d fit` needs besides the capture."""

    filter: FilterConfig = field(default_factory=FilterConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    collision: CollisionConfig = field(default_factory=CollisionConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a TOML value to the dataclass field type, or raise ConfigError naming `where`."""
    if isinstance(annotation, str):
        annotation = eval(annotation, globals())  # annotations are strings under `from __future__ import annotations`
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(annotation, value, where)
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected an array, got {type(value).__name__}")
        item_type = args[0]
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys raise ConfigError naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {name: _coerce(value, fields[name].type, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """Nested dict of a config dataclass (tuples as lists), e.g. for report.json."""
    return _lists(dataclasses.asdict(obj))


def _lists(x: Any) -> Any:
    # asdict keeps tuples; TOML arrays (and from_dict) use lists, so merged presets must too.
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def load_config(path: str | Path | None = None, base: Config | None = None) -> Config:
    """Load a TOML preset onto the defaults (or onto `base`). Tables override field by field."""
    base = base or Config()
    if path is None:
        return base
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    merged = _merge(to_dict(base), data)
    return from_dict(Config, merged, where=str(path))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
