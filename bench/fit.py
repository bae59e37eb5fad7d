"""Speed benchmark of the body fit (issue 6): h4djax `fit_batch` vs a PyTorch reference of the EgoHumans procedure.

Both fit the same synthetic input: ground-truth SMPL parameters of 2 people with smooth motion on the embedded body
model (`models/anny_smpl.npz`), their COCO-17 fit points plus Gaussian noise (default 5 mm per coordinate) as the
"refined keypoints". Both start from the same initialization (`h4djax.fit.init.init_params`, computed once by JAX
and handed to the reference), use the same stages, iteration counts, epochs, loss terms, weights and units
(`FitConfig` defaults with the collision term off), and are scored by the same evaluator (the JAX forward of the
fitted parameters): MPJPE of the COCO-17 fit points against the ground-truth points and against the noisy targets.

- ours: `fit_batch` (one jit, default Adam stages). Compile time = first call minus the steady-state median.
  Our timing includes the initialization and target preparation (they run inside `fit_batch`); the reference's
  does not (it receives the initialization), so the comparison is conservative for us.
- ours, L-BFGS variant: the same stages with `optimizer="lbfgs"` (optax L-BFGS + zoom line search, one L-BFGS
  iteration per stage iteration).
- reference: `bench/reference_fit_torch.py` (smplx + torch.optim.LBFGS, EgoHumans' loop: per person, whole sequence
  in one batch, fresh optimizer per stage and epoch, `iters` calls of `LBFGS.step` with max_iter=20, ftol early stop).
  It is run on the first `--ref-frames` frames (the full reference on 600 frames takes far longer than the time
  budget on this machine). Its full-size time is extrapolated as
  `t_ref(ref_frames) * t_eval(frames) / t_eval(ref_frames)`, where `t_eval(n)` is the measured time of one closure
  evaluation (forward + backward of the pose stage) on n frames: it assumes the reference needs as many closure
  evaluations on the full sequence as on the prefix (L-BFGS on more frames usually needs more, so the estimate is
  a lower bound of the reference time). Our fit is also run on the same prefix, so a same-size ratio is measured
  directly too.

Usage (from the repository root):
    .venv/bin/python bench/fit.py                      # 2 people x 600 frames, reference on 60 frames
    .venv/bin/python bench/fit.py --frames 300 --epochs 2 --ref-frames 30
    .venv/bin/python bench/fit.py --quick              # smoke test (< 2 min), does not touch RESULTS.md
Writes bench/fit.json and the fit section of bench/RESULTS.md (between its markers; other sections untouched).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
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
from h4djax.body.keypoints import coco_fit_points  # noqa: E402
from h4djax.body.lbs import smpl_joints_keypoints_batch  # noqa: E402
from h4djax.body.model import SmplParams  # noqa: E402
from h4djax.config import FitConfig  # noqa: E402
from h4djax.fit.fit import fit_batch, stages_from_config  # noqa: E402
from h4djax.fit.init import init_params  # noqa: E402

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


@jax.jit
def _points_people_major(model, params: SmplParams):
    return coco_fit_points(model, smpl_joints_keypoints_batch(model, params))


def fit_points(model, p: dict[str, np.ndarray]) -> np.ndarray:
    """COCO-17 fit points [F,P,17,3] of frames-major parameters (the common evaluator of both fits)."""
    sw = lambda x: jnp.swapaxes(jnp.asarray(x, model.dtype), 0, 1)  # noqa: E731
    pm = SmplParams(global_orient=sw(p["global_orient"]), body_pose=sw(p["body_pose"]),
                    betas=jnp.asarray(p["betas"], model.dtype), transl=sw(p["transl"]))
    return np.swapaxes(np.asarray(_points_people_major(model, pm)), 0, 1)


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
    """Time `fit_batch` on one sequence kp [F,P,17,3]: first call (compile + run) and the steady-state median."""
    specs, weights = stages_from_config(cfg)
    k = jnp.asarray(kp[None], model.dtype)
    w = jnp.ones(kp.shape[:3], model.dtype)[None]
    fm = jnp.ones((1, kp.shape[0]), model.dtype)

    def call():
        out = fit_batch(model, k, w, fm, weights, specs=specs, epochs=cfg.epochs, collision_fn=None)
        return jax.block_until_ready(out)

    t0 = time.perf_counter()
    params, summary = call()
    first = time.perf_counter() - t0
    steady = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        params, summary = call()
        steady.append(time.perf_counter() - t0)
    med = float(np.median(steady))
    p = {g: np.asarray(getattr(params, g))[0] for g in ("global_orient", "body_pose", "betas", "transl")}
    final = [float(np.asarray(t)[0, -1, -1]) for t in summary.total]
    return dict(first_call_s=first, steady_s=med, steady_all_s=steady, compile_s=max(first - med, 0.0), params=p,
                final_stage_objective=final, finite=bool(all(np.isfinite(v).all() for v in p.values())))


def run_reference(body, kp: np.ndarray, init: dict[str, np.ndarray], cfg: FitConfig) -> dict:
    """EgoHumans loop: one person after the other, whole (prefix) sequence per person."""
    import reference_fit_torch as ref

    stages = ref.stages_from_fit_config(cfg)
    F, P = kp.shape[:2]
    out = {g: [] for g in ("global_orient", "body_pose", "betas", "transl")}
    seconds, evals, steps = [], [], []
    for p in range(P):
        tg = ref.person_targets(kp[:, p], np.ones((F, 17)), np.ones(F))
        ini = {g: (init[g][p] if g == "betas" else init[g][:, p]) for g in out}
        res = ref.fit_person(body, tg, ini, stages, cfg.epochs)
        for g in out:
            out[g].append(res.params[g])
        seconds.append(res.seconds)
        evals.append(res.closure_evals)
        steps.append(res.steps)
    params = {g: (np.stack(v, 0) if g == "betas" else np.stack(v, 1)) for g, v in out.items()}
    return dict(seconds=float(sum(seconds)), seconds_per_person=seconds, closure_evals=evals, lbfgs_steps=steps,
                params=params, finite=bool(all(np.isfinite(v).all() for v in params.values())))


def reference_eval_cost(body, kp: np.ndarray, init: dict[str, np.ndarray], cfg: FitConfig, frames: list[int],
                        repeats: int) -> dict[int, float]:
    """Median seconds of one reference closure evaluation (pose stage: all of global_orient, transl, body_pose free;
    full smplx forward + backward) of person 0 on the first n frames, for each n in `frames`."""
    import reference_fit_torch as ref

    pose_stage = ref.stages_from_fit_config(cfg)[-1]
    out = {}
    for n in frames:
        tg = ref.person_targets(kp[:n, 0], np.ones((n, 17)), np.ones(n))
        ini = {g: (init[g][0] if g == "betas" else init[g][:n, 0]) for g in ("global_orient", "body_pose", "betas",
                                                                               "transl")}
        out[n] = ref.time_closure_eval(body, tg, ini, pose_stage, repeats=repeats)
    return out


def smplx_parity(body, model, gt: dict[str, np.ndarray], n: int = 8) -> float:
    """Max |smplx - h4djax| over the COCO fit points of the first n ground-truth frames (metres)."""
    import torch

    import reference_fit_torch as ref

    worst = 0.0
    with torch.no_grad():
        jp = fit_points(model, _sub(gt, n))
        for p in range(jp.shape[1]):
            t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
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
    o, os_, lb = r["ours"], r["ours_prefix"], r.get("ours_lbfgs")
    rf = r["reference"]
    lines = [
        MARK_BEGIN,
        "## Body fit (`bench/fit.py`, issue 6)",
        "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores shared with other engineers "
        f"(load average {r['machine']['load_before'][0]:.1f} before, {r['machine']['load_after'][0]:.1f} after), "
        f"no GPU; jax {r['versions']['jax']}, torch {r['versions']['torch']} ({r['versions']['torch_threads']} "
        f"threads), smplx {r['versions']['smplx']}. Date {r['date']}.",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Input: {a['people']} people x {a['frames']} frames of synthetic smooth motion on `models/anny_smpl.npz` "
        f"(13,718 vertices), COCO-17 fit points + {a['noise_mm']:g} mm Gaussian noise per coordinate. Schedule: "
        f"`FitConfig` defaults, {a['epochs']} epochs x stages "
        f"{'/'.join(str(s['iters']) for s in r['stages'])} iterations, collision off. Same initialization "
        f"(`init_params`) for both; MPJPE of the 17 COCO fit points (mm), mean over people and frames. "
        f"smplx vs h4djax forward on the GT: max difference {r['smplx_parity_m'] * 1e3:.4f} mm.",
        "",
        "| run | frames | time (s) | compile (s) | MPJPE vs GT | MPJPE vs noisy targets |",
        "|---|---:|---:|---:|---:|---:|",
        f"| init only (`init_params`) | {a['frames']} | | | {r['init_mpjpe_gt_mm']:.1f} | "
        f"{r['init_mpjpe_noisy_mm']:.1f} |",
        f"| ours, Adam (`fit_batch`) | {a['frames']} | {o['steady_s']:.2f} | {o['compile_s']:.1f} | "
        f"{o['mpjpe_gt_mm']:.2f} | {o['mpjpe_noisy_mm']:.2f} |",
    ]
    if lb is not None:
        lines.append(f"| ours, L-BFGS stages (variant) | {a['frames']} | {lb['steady_s']:.2f} | {lb['compile_s']:.1f} "
                     f"| {lb['mpjpe_gt_mm']:.2f} | {lb['mpjpe_noisy_mm']:.2f} |")
    lines += [
        f"| ours, Adam, prefix | {a['ref_frames']} | {os_['steady_s']:.2f} | {os_['compile_s']:.1f} | "
        f"{os_['mpjpe_gt_mm']:.2f} | {os_['mpjpe_noisy_mm']:.2f} |",
        f"| reference (smplx + torch LBFGS, EgoHumans loop), prefix | {a['ref_frames']} | {rf['seconds']:.1f} | | "
        f"{rf['mpjpe_gt_mm']:.2f} | {rf['mpjpe_noisy_mm']:.2f} |",
        f"| reference, extrapolated to the full sequence | {a['frames']} | {r['reference_full_estimate_s']:.0f} "
        f"(est.) | | | |",
        "",
        f"Ratios (reference time / our steady-state time): measured on the {a['ref_frames']}-frame prefix "
        f"**{r['ratio_prefix']:.1f}x**; full {a['frames']} frames (reference extrapolated) **{r['ratio_full']:.0f}x**"
        + (f"; L-BFGS variant {r['ratio_full_lbfgs']:.0f}x" if lb is not None else "") + ". "
        f"Including our compile time in the full-size run: {r['ratio_full_with_compile']:.0f}x.",
        "",
        f"Reference work: {rf['closure_evals']} closure evaluations per person (forward + backward of the whole prefix "
        f"sequence), `LBFGS.step` calls per stage and epoch {rf['lbfgs_steps']}. One closure evaluation (pose stage) "
        f"costs {', '.join(f'{v * 1e3:.0f} ms on {k} frames' for k, v in r['reference_eval_s'].items())}; the "
        f"full-size estimate scales the prefix time by that ratio (same number of evaluations assumed, a lower bound). "
        f"Per person-frame and gradient evaluation: ours {r['ours_us_per_frame_eval']:.1f} us, reference "
        f"{r['reference_us_per_frame_eval']:.1f} us.",
        "",
        "Notes: our time includes initialization and target preparation (inside `fit_batch`), the reference's does "
        "not. The Anny model has no pose correctives (posedirs = 0): our forward skips them, smplx multiplies by "
        "the zero posedirs anyway, as it would for SMPL. The reference's L-BFGS (max_iter=20 per step, ftol early "
        "stop) does many more function evaluations per stage iteration than our one Adam step.",
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
    ap.add_argument("--ref-frames", type=int, default=60, help="frames of the prefix the reference is run on")
    ap.add_argument("--repeats", type=int, default=3, help="steady-state repetitions of our fit (median)")
    ap.add_argument("--noise-mm", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lbfgs-variant", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small smoke run; does not write RESULTS.md")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "fit.json")
    ap.add_argument("--results-md", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--no-results-md", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.ref_frames, args.repeats = min(args.frames, 40), min(args.ref_frames, 10), 1
        args.epochs = 1 if args.epochs is None else args.epochs
        args.no_results_md = True
        if args.out == ROOT / "bench" / "fit.json":
            args.out = ROOT / "bench" / "fit_quick.json"
    args.ref_frames = min(args.ref_frames, args.frames)

    import smplx
    import torch

    import reference_fit_torch as ref

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    base = FitConfig()
    cfg = dataclasses.replace(base, epochs=base.epochs if args.epochs is None else args.epochs,
                              stages=tuple(dataclasses.replace(s, w_collision=0.0) for s in base.stages))
    cfg_lbfgs = dataclasses.replace(cfg, stages=tuple(dataclasses.replace(s, optimizer="lbfgs") for s in cfg.stages))
    args.epochs = cfg.epochs

    model = load_body_model(None)
    body = ref.load_smplx_body(str(default_body_model_path()), model.coco_fit_index)
    print(f"model {model.name}: {model.num_verts} vertices; torch threads {torch.get_num_threads()}", flush=True)

    gt = synth_params(args.frames, args.people, model.num_betas, seed=args.seed)
    gt_pts = fit_points(model, gt)
    noise = np.random.default_rng(args.seed + 1).normal(0.0, args.noise_mm * 1e-3, gt_pts.shape)
    kp = (gt_pts + noise).astype(np.float32)
    parity = smplx_parity(body, model, gt)
    print(f"smplx parity {parity * 1e3:.4f} mm", flush=True)

    valid = jnp.ones(kp.shape[:3], bool)
    init_full = _as_dict(jax.jit(init_params)(model, jnp.asarray(kp), valid))
    init_pts = fit_points(model, init_full)

    def score(res, n):
        pts = fit_points(model, res["params"])
        res["mpjpe_gt_mm"] = mpjpe_mm(pts, gt_pts[:n])
        res["mpjpe_noisy_mm"] = mpjpe_mm(pts, kp[:n])
        return res

    ours = score(run_ours(model, kp, cfg, args.repeats), args.frames)
    print(f"ours: first {ours['first_call_s']:.1f}s steady {ours['steady_s']:.2f}s MPJPE {ours['mpjpe_gt_mm']:.2f}mm",
          flush=True)
    ours_lbfgs = None
    if not args.no_lbfgs_variant:
        ours_lbfgs = score(run_ours(model, kp, cfg_lbfgs, max(1, args.repeats - 1)), args.frames)
        print(f"ours lbfgs: first {ours_lbfgs['first_call_s']:.1f}s steady {ours_lbfgs['steady_s']:.2f}s "
              f"MPJPE {ours_lbfgs['mpjpe_gt_mm']:.2f}mm", flush=True)
    n = args.ref_frames
    ours_prefix = score(run_ours(model, kp[:n], cfg, args.repeats), n)
    print(f"ours prefix: steady {ours_prefix['steady_s']:.2f}s MPJPE {ours_prefix['mpjpe_gt_mm']:.2f}mm", flush=True)

    init_prefix = _as_dict(jax.jit(init_params)(model, jnp.asarray(kp[:n]), valid[:n]))
    reference = score(run_reference(body, kp[:n], init_prefix, cfg), n)
    print(f"reference: {reference['seconds']:.1f}s evals {reference['closure_evals']} "
          f"MPJPE {reference['mpjpe_gt_mm']:.2f}mm", flush=True)
    eval_cost = reference_eval_cost(body, kp, init_full, cfg, sorted({n, args.frames}), repeats=2)
    ref_full = reference["seconds"] * eval_cost[args.frames] / eval_cost[n]

    total_iters = cfg.epochs * sum(s.iters for s in cfg.stages)
    result = dict(
        benchmark="bench/fit.py",
        date=datetime.date.today().isoformat(),
        command="python bench/fit.py " + " ".join(sys.argv[1:] if argv is None else argv),
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        machine=dict(cpu=_cpu_name(), cores=os.cpu_count(), load_before=load_before, load_after=os.getloadavg(),
                     platform=platform.platform()),
        versions=dict(jax=jax.__version__, torch=torch.__version__, smplx=getattr(smplx, "__version__", "0.1.28"),
                      torch_threads=torch.get_num_threads(), python=platform.python_version()),
        stages=[dict(name=s.name, free=list(s.free), iters=s.iters, optimizer=s.optimizer, joints=s.joints)
                for s in cfg.stages],
        reference_optimizer=dict(**ref.EGOHUMANS_LBFGS, ftol=ref.EGOHUMANS_FTOL),
        smplx_parity_m=parity,
        init_mpjpe_gt_mm=mpjpe_mm(init_pts, gt_pts),
        init_mpjpe_noisy_mm=mpjpe_mm(init_pts, kp),
        ours={k: v for k, v in ours.items() if k != "params"},
        ours_lbfgs=None if ours_lbfgs is None else {k: v for k, v in ours_lbfgs.items() if k != "params"},
        ours_prefix={k: v for k, v in ours_prefix.items() if k != "params"},
        reference={k: v for k, v in reference.items() if k != "params"},
        reference_eval_s={str(k): v for k, v in eval_cost.items()},
        reference_full_estimate_s=ref_full,
        ratio_prefix=reference["seconds"] / ours_prefix["steady_s"],
        ratio_full=ref_full / ours["steady_s"],
        ratio_full_with_compile=ref_full / ours["first_call_s"],
        ratio_full_lbfgs=None if ours_lbfgs is None else ref_full / ours_lbfgs["steady_s"],
        ours_us_per_frame_eval=ours["steady_s"] / (args.people * args.frames * total_iters) * 1e6,
        reference_us_per_frame_eval=reference["seconds"] / (n * sum(reference["closure_evals"])) * 1e6,
        total_benchmark_s=time.perf_counter() - t_start,
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_prefix", "ratio_full", "ratio_full_lbfgs",
                                             "reference_full_estimate_s", "total_benchmark_s")}, indent=2))
    if not args.no_results_md:
        update_results_md(args.results_md, markdown_section(result))
    return result


if __name__ == "__main__":
    main()
