"""PyTorch reference of the EgoHumans body fit, for `bench/fit.py` (optional bench dependency: torch + smplx).

What EgoHumans does (rawalkhirodkar/egohumans, read for this reference, nothing copied):

- `lib/models/smplify.py` `SMPLify.get_smpl_trajectory(human_name, ...)` is called once PER PERSON. It builds
  mmhuman3d's `SMPLify` registrant from `configs/smplify/smplify3d_temporal.py` with `use_one_betas_per_video=True`
  and the per-sequence `NUM_EPOCHS_LIST` / `STAGE{1,2,3}_ITERS_LIST` (e.g. `configs/badminton/001_badminton.yaml`:
  10 epochs, 50 / 20 / 120 iterations), and fits the person's WHOLE SEQUENCE AS ONE BATCH (batch = frames, one
  betas row expanded over the frames).
- `mmhuman3d/models/registrants/smplify.py` `SMPLify.__call__`: `for epoch in range(num_epochs): for stage in
  stages: _optimize_stage(...)`. `_optimize_stage` builds a FRESH optimizer over the stage's free parameters
  (mmcv `build_optimizer`, config `dict(type='LBFGS', max_iter=20, lr=1e-2, line_search_fn='strong_wolfe')`), then
  `for iter_idx in range(num_iter): loss = optimizer.step(closure)` where the closure runs the full SMPL forward
  (`smplx` lbs: all vertices, pose blend shapes) and `backward()`. Every `step` is one `torch.optim.LBFGS.step`, i.e.
  up to `max_iter = 20` L-BFGS iterations with a strong-Wolfe line search. The stage stops early when the relative
  loss change between steps `|prev - cur| / max(|prev|, |cur|, 1)` drops below `ftol = 1e-4`.
- Stages (`smplify3d_temporal.py`): (1) global_orient + transl, 3D keypoint loss on shoulders and hips only;
  (2) betas, limb-length loss + shape prior; (3) global_orient + transl + body_pose, keypoints + pose regularizer +
  smoothness + limb length.

This reference reproduces that procedure loop for loop (per person; whole sequence per person in one batch; per epoch
and stage a fresh `torch.optim.LBFGS(lr=1e-2, max_iter=20, line_search_fn="strong_wolfe")`; `iters` calls of
`step(closure)`; ftol early stop), with two deliberate substitutions so that its result is comparable with h4djax:

- Loss terms, weights and units are those of `h4djax/fit/losses.py` (centimetres for positions; rotation-matrix
  smoothness; means over valid entries) rather than mmhuman3d's loss classes, and the stage weights come from the
  same `FitConfig` the JAX fit uses (Harmony4D Table 1). Terms with weight 0 are skipped, as mmhuman3d does.
- The model is `smplx.SMPL` loaded from the same `.npz` as h4djax, and the COCO-17 model points follow the same
  correspondence as the JAX fit (`h4djax.fit.fit.model_point_index`: indices into concat([SMPL joints, regressed
  keypoints]), the keypoints being the model's `kpt_regressor` rows applied to smplx's posed vertices). With the
  default "regressor" correspondence all 17 points are regressed from the mesh; with "paper" the body points are
  SMPL joints and the face points regressed, which is what EgoHumans does (it reads face points from single SMPL
  vertices via smplx's `vertex_joint_selector`; on the Anny topology those vertex ids are meaningless).

Assumption (not visible in the code we read): which epoch count EgoHumans uses for Harmony4D; the benchmark runs both
implementations with the same `FitConfig.epochs` so that only the optimizer and the implementation differ.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from h4djax.fit.init import TORSO
from h4djax.fit.losses import LENGTH_SCALE
from h4djax.refine.limbs import LIMBS, SYMMETRIC_PAIRS

GROUPS = ("global_orient", "body_pose", "betas", "transl")

# mmhuman3d SMPLify optimizer as configured by EgoHumans (smplify3d_temporal.py) and its early-stop tolerance.
EGOHUMANS_LBFGS = dict(lr=1e-2, max_iter=20, line_search_fn="strong_wolfe")
EGOHUMANS_FTOL = 1e-4


@dataclass(frozen=True)
class RefStage:
    """One stage: free parameter groups, number of `LBFGS.step` calls, keypoint subset and loss weights."""

    name: str
    free: tuple[str, ...]
    iters: int
    joints: str = "all"
    w_joint: float = 0.0
    w_reg: float = 0.0
    w_limb: float = 0.0
    w_symm: float = 0.0
    w_temporal: float = 0.0
    w_beta: float = 0.0


def stages_from_fit_config(cfg) -> tuple[RefStage, ...]:
    """The reference stages for an `h4djax.config.FitConfig` (same groups, iteration counts and weights).

    The collision term is not part of the speed benchmark; a stage with w_collision != 0 is refused so that a
    config with collision on is not silently compared against a reference without it.
    """
    out = []
    for st in cfg.stages:
        if st.w_collision != 0.0:
            raise ValueError(f"stage '{st.name}': the reference has no collision term; set w_collision = 0")
        out.append(RefStage(name=st.name, free=tuple(st.free), iters=st.iters, joints=st.joints, w_joint=st.w_joint,
                            w_reg=st.w_reg, w_limb=st.w_limb, w_symm=st.w_symm, w_temporal=st.w_temporal,
                            w_beta=st.w_beta))
    return tuple(out)


@dataclass
class SmplxBody:
    """smplx.SMPL on the h4djax model file plus the COCO-17 fit correspondence."""

    smpl: torch.nn.Module
    kpt_rows: torch.Tensor
    """f[k, verts]: the keypoint-regressor rows the COCO face points need."""
    coco_index: torch.Tensor
    """i[17]: indices into concat([24 SMPL joints, k regressed keypoints])."""


def load_smplx_body(path: str, coco_fit_index: tuple[int, ...], dtype=torch.float32) -> SmplxBody:
    """Load an SMPL-layout `.npz` (keys v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f,
    kpt_regressor) into `smplx.SMPL` (smplx 0.1.28 reads only pickles from a path; an .npz goes in as data_struct).

    `coco_fit_index`: indices into concat([joints, keypoints]) of the 17 COCO model points
    (`h4djax.fit.fit.model_point_index(model, correspondence)`).
    """
    import smplx

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    struct = smplx.utils.Struct(**arrays)
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 shape components
        smpl = smplx.SMPL(model_path=str(path), data_struct=struct, num_betas=arrays["shapedirs"].shape[-1],
                          batch_size=1, dtype=dtype)
    smpl.eval()
    for p in smpl.parameters():  # we pass every parameter explicitly; the module's own are unused
        p.requires_grad_(False)
    n_joints = arrays["kintree_table"].shape[1]
    kp_ids = sorted({i - n_joints for i in coco_fit_index if i >= n_joints})
    remap = {n_joints + k: n_joints + r for r, k in enumerate(kp_ids)}
    index = [remap.get(i, i) for i in coco_fit_index]
    kpt_rows = torch.as_tensor(arrays["kpt_regressor"][kp_ids], dtype=dtype)
    return SmplxBody(smpl=smpl, kpt_rows=kpt_rows, coco_index=torch.as_tensor(index, dtype=torch.long))


def coco_points(body: SmplxBody, global_orient, body_pose, betas, transl) -> torch.Tensor:
    """COCO-17 fit points f[frames, 17, 3] (metres) of one person's sequence, through the full smplx forward."""
    out = body.smpl(global_orient=global_orient, body_pose=body_pose, betas=betas, transl=transl)
    n_joints = body.smpl.J_regressor.shape[0]
    kp = torch.einsum("kv,fvc->fkc", body.kpt_rows, out.vertices)
    pts = torch.cat([out.joints[:, :n_joints], kp], dim=1)
    return pts[:, body.coco_index]


@dataclass
class PersonTargets:
    keypoints: torch.Tensor      # f[frames, 17, 3] metres (0 where invalid)
    weight: torch.Tensor         # f[frames, 17] (already multiplied by the frame mask)
    frame_mask: torch.Tensor     # f[frames]
    limb_lengths: torch.Tensor   # f[limbs] median observed limb lengths (metres)
    limb_weight: torch.Tensor    # f[limbs]


def person_targets(keypoints: np.ndarray, weight: np.ndarray, frame_mask: np.ndarray, dtype=torch.float32
                   ) -> PersonTargets:
    """Targets of one person (frames-major numpy input), as `h4djax.fit.fit.make_targets` defines them."""
    fm = frame_mask.astype(np.float64)
    w = weight.astype(np.float64) * fm[:, None]
    kp = np.where(w[..., None] > 0, keypoints, 0.0)
    lengths = np.linalg.norm(kp[:, LIMBS[:, 0]] - kp[:, LIMBS[:, 1]], axis=-1)
    ok = (w[:, LIMBS[:, 0]] > 0) & (w[:, LIMBS[:, 1]] > 0)
    med = np.array([np.median(lengths[ok[:, i], i]) if ok[:, i].any() else 0.0 for i in range(len(LIMBS))])
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
    return PersonTargets(keypoints=t(kp), weight=t(w), frame_mask=t(fm), limb_lengths=t(med),
                         limb_weight=t(ok.any(axis=0)))


def _masked_mean(x, w):
    return (x * w).sum() / torch.clamp(w.sum(), min=1.0)


def _limb_lengths(pts):
    d = pts[:, LIMBS[:, 0]] - pts[:, LIMBS[:, 1]]
    return torch.sqrt((d * d).sum(-1))


def objective(body: SmplxBody, params: dict[str, torch.Tensor], tg: PersonTargets, stage: RefStage
              ) -> torch.Tensor:
    """Weighted loss of one person's sequence (the terms of h4djax/fit/losses.py, weight-0 terms skipped)."""
    from smplx.lbs import batch_rodrigues

    pts = coco_points(body, params["global_orient"], params["body_pose"], params["betas"], params["transl"])
    total = pts.new_zeros(())
    if stage.w_joint:
        mask = torch.zeros(17, dtype=pts.dtype)
        mask[list(TORSO) if stage.joints == "torso" else slice(None)] = 1.0
        d2 = (((pts - tg.keypoints) * LENGTH_SCALE) ** 2).sum(-1)
        total = total + stage.w_joint * _masked_mean(d2, tg.weight * mask)
    if stage.w_reg:
        total = total + stage.w_reg * _masked_mean((params["body_pose"] ** 2).sum(-1), tg.frame_mask)
    if stage.w_limb or stage.w_symm:
        lengths = _limb_lengths(pts)
        if stage.w_limb:
            w = tg.limb_weight[None, :] * tg.frame_mask[:, None]
            total = total + stage.w_limb * _masked_mean(((lengths - tg.limb_lengths) * LENGTH_SCALE) ** 2, w)
        if stage.w_symm:
            lc = lengths * LENGTH_SCALE
            d = lc[:, SYMMETRIC_PAIRS[:, 0]] - lc[:, SYMMETRIC_PAIRS[:, 1]]
            total = total + stage.w_symm * _masked_mean(d ** 2, tg.frame_mask[:, None].expand_as(d))
    if stage.w_temporal:
        full = torch.cat([params["global_orient"], params["body_pose"]], dim=1)
        R = batch_rodrigues(full.reshape(-1, 3)).reshape(full.shape[0], -1, 3, 3)
        diff = ((R[1:] - R[:-1]) ** 2).sum(dim=(-1, -2, -3))
        total = total + stage.w_temporal * _masked_mean(diff, tg.frame_mask[1:] * tg.frame_mask[:-1])
    if stage.w_beta:
        total = total + stage.w_beta * (params["betas"] ** 2).sum()
    return total


@dataclass
class PersonResult:
    params: dict[str, np.ndarray]
    seconds: float
    closure_evals: int
    evals_per_epoch: list[int] = field(default_factory=list)
    steps: dict[str, list[int]] = field(default_factory=dict)
    """`LBFGS.step` calls per stage name, one entry per epoch (< iters where ftol stopped the stage)."""


def fit_person(body: SmplxBody, tg: PersonTargets, init: dict[str, np.ndarray], stages: tuple[RefStage, ...],
               epochs: int, lbfgs: dict | None = None, ftol: float = EGOHUMANS_FTOL) -> PersonResult:
    """EgoHumans' SMPLify loop for one person's whole sequence (one batch over frames, one betas row).

    init: global_orient f[F,3], body_pose f[F,69], transl f[F,3], betas f[B] (numpy).
    """
    lbfgs = dict(EGOHUMANS_LBFGS if lbfgs is None else lbfgs)
    dt = body.kpt_rows.dtype
    params = {
        "global_orient": torch.as_tensor(np.array(init["global_orient"]), dtype=dt).clone(),
        "body_pose": torch.as_tensor(np.array(init["body_pose"]), dtype=dt).clone(),
        "transl": torch.as_tensor(np.array(init["transl"]), dtype=dt).clone(),
        "betas": torch.as_tensor(np.array(init["betas"]), dtype=dt).reshape(1, -1).clone(),
    }
    evals = 0
    steps: dict[str, list[int]] = {s.name: [] for s in stages}
    evals_per_epoch = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        evals_before = evals
        for stage in stages:
            for g in GROUPS:
                params[g].requires_grad_(g in stage.free)
            opt = torch.optim.LBFGS([params[g] for g in GROUPS if g in stage.free], **lbfgs)

            def closure():
                nonlocal evals
                opt.zero_grad()
                loss = objective(body, params, tg, stage)
                loss.backward()
                evals += 1
                return loss

            pre = None
            n = 0
            for it in range(stage.iters):
                loss = opt.step(closure)
                n += 1
                cur = float(loss.detach())
                if it > 0 and pre is not None and ftol > 0:
                    if abs(pre - cur) / max(abs(pre), abs(cur), 1.0) < ftol:
                        break
                pre = cur
            steps[stage.name].append(n)
        evals_per_epoch.append(evals - evals_before)
    seconds = time.perf_counter() - t0
    out = {g: params[g].detach().numpy().copy() for g in GROUPS}
    out["betas"] = out["betas"][0]
    return PersonResult(params=out, seconds=seconds, closure_evals=evals, evals_per_epoch=evals_per_epoch,
                        steps=steps)


def time_closure_eval(body: SmplxBody, tg: PersonTargets, init: dict[str, np.ndarray], stage: RefStage,
                      repeats: int = 3) -> float:
    """Median seconds of one closure evaluation (full forward + backward) of `stage` on this person's frames."""
    dt = body.kpt_rows.dtype
    params = {g: torch.as_tensor(np.array(init[g]), dtype=dt).detach().clone() for g in GROUPS}
    params["betas"] = params["betas"].reshape(1, -1)
    for g in GROUPS:
        params[g].requires_grad_(g in stage.free)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for g in stage.free:
            params[g].grad = None
        objective(body, params, tg, stage).backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))
