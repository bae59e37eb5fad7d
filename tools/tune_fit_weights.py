#!/usr/bin/env python
"""Tune the stage-3 ("pose") loss weights of the body fit by gradient descent on synthetic ground truth.

A research use of the differentiable fit (issue 6, docs/research_gradient_tuning.md). The metric is the MPJPE of
the fitted model keypoints against the ground-truth 3D keypoints of a TRAIN synthetic capture; each outer step is
ONE `jax.value_and_grad` of that metric w.r.t. the log stage-3 weights, through the analytic init and every Adam
iteration of every stage of the fit (a `lax.scan`), followed by one `optax.adam` step on the log weights. The
tuned weights are then scored on a HELD-OUT capture (another seed) with exactly the same schedule.

Triangulation and refinement do not depend on the stage-3 weights, so they run once per capture (forward) and the
gradient flows through the fit only: the same derivative as through `run_pipeline`, at a fraction of the compile
time (whole-chain gradients w.r.t. keypoints, cameras and weights: tests/test_pipeline.py).

The weights are traced arrays, so the outer loop never recompiles: the script counts XLA compilations (and their
seconds) during every outer step with a `jax.monitoring` listener, and times the first call (compile + run) apart.

    h4d synth /tmp/tune/train --cameras 8 --frames 24 --scenario hug --seed 0 --preset configs/synth_hard.toml
    h4d synth /tmp/tune/test  --cameras 8 --frames 24 --scenario hug --seed 1 --preset configs/synth_hard.toml
    python tools/tune_fit_weights.py /tmp/tune/train /tmp/tune/test --steps 15 --epochs 1

Collision is off (w_collision = 0 in every stage: the SDF term dominates CPU time). Both captures need the same
number of frames, cameras and people (one compiled program serves both).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

TUNABLE = ("w_temporal", "w_reg", "w_limb", "w_symm", "w_joint", "w_beta", "learning_rate")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", type=Path, help="synthetic capture directory with gt.npz to tune on (e.g. seed 0)")
    p.add_argument("heldout", type=Path, help="synthetic capture directory with gt.npz to evaluate on (e.g. seed 1)")
    p.add_argument("--config", type=Path, default=None, help="engine config TOML (default: built-in defaults)")
    p.add_argument("--weights", default="w_temporal,w_reg,w_limb",
                   help=f"comma-separated stage-3 weights to tune, from {','.join(TUNABLE)} (default %(default)s)")
    p.add_argument("--stage", type=int, default=-1, help="index of the tuned stage (default -1: the last, 'pose')")
    p.add_argument("--steps", type=int, default=15, help="outer gradient steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.3, help="optax.adam step on the LOG weights (default %(default)s)")
    p.add_argument("--epochs", type=int, default=1,
                   help="fit epochs (default %(default)s; the engine default is 3: a reduced but identical "
                        "schedule before and after tuning)")
    p.add_argument("--iters-scale", type=float, default=1.0,
                   help="multiply every stage's iteration count (default %(default)s = 50/20/120)")
    p.add_argument("--fd-check", type=float, nargs="*", default=None, metavar="H",
                   help="before tuning, compare each gradient entry with central differences of step H in log "
                        "space (same compiled program; e.g. --fd-check 0.01 0.001)")
    p.add_argument("--json", type=Path, default=None, help="write the step log and results here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of the train MPJPE and weights per step")
    return p.parse_args(argv)


def prepare(capture_dir: Path, cfg, model):
    """Triangulate and refine one capture (forward only); returns the fit's inputs and the ground truth."""
    import jax.numpy as jnp
    import numpy as np

    from h4djax.eval.report import load_ground_truth
    from h4djax.geometry.cameras import to_jax
    from h4djax.io.capture import read_capture
    from h4djax.pipeline import pipeline_from_config, refine_stage, triangulate_stage

    cap = read_capture(capture_dir)
    gt = load_ground_truth(capture_dir)
    weights, options = pipeline_from_config(cfg, model)
    kp = jnp.asarray(np.asarray(cap.keypoints, np.float32)[..., :17, :])
    tri = triangulate_stage(to_jax(cap.cameras, jnp.float32), kp, weights, options)
    refined = refine_stage(tri, weights, options)
    # The fit's keypoint weights, as in pipeline.fit_stage: 1 observed, refine's w_filled for gap-filled, 0 absent.
    kw = (jnp.where(refined.filled, weights.refine.w_filled, 1.0) * refined.valid).astype(jnp.float32)
    gtj = np.asarray(gt.joints3d, np.float32)
    gt_ok = np.all(np.isfinite(gtj), -1)
    return dict(xyz=refined.xyz, kw=kw, gt=jnp.asarray(np.where(gt_ok[..., None], gtj, 0.0)),
                gt_ok=jnp.asarray(gt_ok, jnp.float32), shape=tuple(kp.shape))


def make_metric(model, specs, base_weights, stage: int, names: tuple[str, ...], epochs: int):
    """metric(log_w, xyz, kw, gt, gt_ok) -> MPJPE (m) of the fitted model keypoints; log_w: {name: log weight}."""
    import jax.numpy as jnp

    from h4djax.body.lbs import smpl_joints_keypoints_batch
    from h4djax.body.model import SmplParams
    from h4djax.fit.fit import fit_sequence, model_points

    def metric(log_w, xyz, kw, gt, gt_ok):
        ws = list(base_weights)
        ws[stage] = ws[stage].replace(**{n: jnp.exp(log_w[n]) for n in names})
        params, _ = fit_sequence(model, xyz, kw, specs, tuple(ws), epochs)  # frames-major
        pm = SmplParams(global_orient=jnp.swapaxes(params.global_orient, 0, 1),
                        body_pose=jnp.swapaxes(params.body_pose, 0, 1), betas=params.betas,
                        transl=jnp.swapaxes(params.transl, 0, 1))
        pts = jnp.swapaxes(model_points(model, smpl_joints_keypoints_batch(model, pm), specs[stage].correspondence),
                           0, 1)  # [F, P, 17, 3]
        d2 = jnp.sum((pts - gt) ** 2, -1)
        err = jnp.sqrt(jnp.where(gt_ok > 0, d2, 1.0))  # safe sqrt: no NaN gradient at masked joints
        return jnp.sum(err * gt_ok) / jnp.maximum(jnp.sum(gt_ok), 1.0)

    return metric


def main(argv=None) -> int:
    args = parse_args(argv)
    import h4djax  # noqa: F401  (before jax: sets the XLA flag of the jaxlib CPU fusion workaround)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from h4djax.body import load_body_model
    from h4djax.config import load_config
    from h4djax.fit.fit import stages_from_config

    # Count XLA compilations (and their seconds) as they happen: shows there is no recompilation after step 0.
    compiles = {"n": 0, "s": 0.0}

    def on_event(event: str, duration: float, **_):
        if event.startswith("/jax/core/compile/"):  # tracing, lowering to MLIR and the XLA backend compile
            compiles["s"] += duration
            compiles["n"] += event.endswith("backend_compile_duration")

    jax.monitoring.register_event_duration_secs_listener(on_event)

    names = tuple(n.strip() for n in args.weights.split(",") if n.strip())
    bad = [n for n in names if n not in TUNABLE]
    if bad or not names:
        raise SystemExit(f"--weights: unknown {bad}; choose from {TUNABLE}")

    cfg = load_config(args.config)
    stages = tuple(dataclasses.replace(s, w_collision=0.0, iters=max(1, round(s.iters * args.iters_scale)))
                   for s in cfg.fit.stages)
    cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, stages=stages, epochs=args.epochs))
    model = load_body_model()
    specs, base_weights = stages_from_config(cfg.fit)
    stage = args.stage % len(specs)
    schedule = " / ".join(f"{s.name}:{s.iters}" for s in specs)
    print(f"fit schedule: {args.epochs} epoch(s) of {schedule} Adam iterations, collision off; "
          f"tuning stage '{specs[stage].name}' weights {names}")

    t0 = time.perf_counter()
    train, held = prepare(args.train, cfg, model), prepare(args.heldout, cfg, model)
    if train["shape"] != held["shape"]:
        raise SystemExit(f"train keypoints {train['shape']} and held-out {held['shape']} differ in shape: "
                         "use captures with the same frames, cameras and people")
    F, C, P = train["shape"][:3]
    print(f"triangulation + refinement of both captures ({F} frames, {C} cameras, {P} people): "
          f"{time.perf_counter() - t0:.1f} s")

    metric = make_metric(model, specs, base_weights, stage, names, args.epochs)
    value_and_grad = jax.jit(jax.value_and_grad(metric))
    data = lambda d: (d["xyz"], d["kw"], d["gt"], d["gt_ok"])  # noqa: E731
    log_w = {n: jnp.log(getattr(base_weights[stage], n)) for n in names}
    w0 = {n: float(jnp.exp(v)) for n, v in log_w.items()}
    opt = optax.adam(args.lr)
    opt_state = opt.init(log_w)

    @jax.jit
    def outer_update(log_w, grad, opt_state):
        upd, opt_state = opt.update(grad, opt_state, log_w)
        return optax.apply_updates(log_w, upd), opt_state

    # The first call traces and compiles the value-and-grad program (once: every later call, on either capture and
    # with any weights, reuses it). Timed apart from the outer steps.
    n0, c0, t = compiles["n"], compiles["s"], time.perf_counter()
    jax.block_until_ready(value_and_grad(log_w, *data(train)))
    first = dict(seconds=time.perf_counter() - t, compiles=compiles["n"] - n0, compile_s=compiles["s"] - c0)
    print(f"first value_and_grad call: {first['seconds']:.1f} s, of which {first['compile_s']:.1f} s tracing + "
          f"compiling ({first['compiles']} XLA compilation(s))", flush=True)

    fd = []
    if args.fd_check:
        # Adam's first step is lr * sign(g): the fit is piecewise smooth, so differences over a step that crosses a
        # sign change of some inner gradient entry measure a jump, not the derivative. Report, do not assert.
        _, g0 = value_and_grad(log_w, *data(train))
        for n in names:
            for h in args.fd_check:
                plus = float(value_and_grad({**log_w, n: log_w[n] + h}, *data(train))[0])
                minus = float(value_and_grad({**log_w, n: log_w[n] - h}, *data(train))[0])
                fd.append(dict(weight=n, h=h, grad_mm=float(g0[n]) * 1000, fd_mm=(plus - minus) / (2 * h) * 1000))
                print(f"fd check {n:12s} h={h:g}: jax.grad {fd[-1]['grad_mm']:+.4g}  central difference "
                      f"{fd[-1]['fd_mm']:+.4g}  (mm per unit log weight)")

    log = []
    print(f"{'step':>4} {'train MPJPE mm':>14} {'seconds':>8} {'compiles':>8} {'compile s':>9}  weights  "
          "[d MPJPE(mm) / d log w]")
    best = (np.inf, log_w, -1)
    for step in range(args.steps + 1):  # the last evaluation scores the final weights (no update after it)
        n0, c0 = compiles["n"], compiles["s"]
        t = time.perf_counter()
        value, grad = value_and_grad(log_w, *data(train))
        value = float(value)
        dt = time.perf_counter() - t
        n_comp, s_comp = compiles["n"] - n0, compiles["s"] - c0
        gvals = {n: float(grad[n]) * 1000 for n in names}
        wvals = {n: float(jnp.exp(log_w[n])) for n in names}
        finite = np.isfinite(value) and all(np.isfinite(v) for v in gvals.values())
        log.append(dict(step=step, train_mpjpe_mm=value * 1000, seconds=dt, compiles=n_comp, compile_s=s_comp,
                        weights=wvals, grad_mm=gvals))
        print(f"{step:4d} {value * 1000:14.2f} {dt:8.2f} {n_comp:8d} {s_comp:9.1f}  "
              + " ".join(f"{n}={wvals[n]:.4g}" for n in names) + "  ["
              + " ".join(f"{gvals[n]:+.3g}" for n in names) + "]", flush=True)
        if not finite:
            raise SystemExit(f"non-finite metric or gradient at step {step}: value {value}, grad {gvals}")
        if value < best[0]:
            best = (value, log_w, step)
        if step < args.steps:
            log_w, opt_state = outer_update(log_w, grad, opt_state)

    # Score on the held-out capture: the initial weights, the last iterate and the best-on-train iterate.
    def score(lw, d):
        return float(value_and_grad(lw, *data(d))[0]) * 1000

    w_init = {n: jnp.log(jnp.asarray(w0[n], jnp.float32)) for n in names}
    results = {
        "initial": dict(weights=w0, train_mm=log[0]["train_mpjpe_mm"], heldout_mm=score(w_init, held)),
        "final": dict(weights={n: float(jnp.exp(log_w[n])) for n in names}, train_mm=log[-1]["train_mpjpe_mm"],
                      heldout_mm=score(log_w, held)),
        "best_on_train": dict(step=best[2], weights={n: float(jnp.exp(best[1][n])) for n in names},
                              train_mm=best[0] * 1000, heldout_mm=score(best[1], held)),
    }
    step_times = [e["seconds"] for e in log]
    timing = dict(first_call_s=first["seconds"], first_call_compile_s=first["compile_s"],
                  median_step_s=float(np.median(step_times)), max_step_s=float(np.max(step_times)),
                  compiles_in_steps=sum(e["compiles"] for e in log),
                  jit_cache_size_after=value_and_grad._cache_size())
    print(f"\nfirst value_and_grad call: {timing['first_call_s']:.1f} s ({timing['first_call_compile_s']:.1f} s "
          f"tracing + compiling); outer steps: median {timing['median_step_s']:.2f} s, max "
          f"{timing['max_step_s']:.2f} s, {timing['compiles_in_steps']} compilations; value_and_grad programs after "
          f"scoring both captures: {timing['jit_cache_size_after']} (1 = no recompilation across steps, weights "
          "and captures)")
    print(f"{'':15} {'train MPJPE mm':>14} {'held-out MPJPE mm':>17}  weights")
    for k, r in results.items():
        print(f"{k:15} {r['train_mm']:14.2f} {r['heldout_mm']:17.2f}  "
              + " ".join(f"{n}={v:.4g}" for n, v in r["weights"].items()))
    if args.json:
        args.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, schedule=schedule,
                                             frames=F, cameras=C, people=P, log=log, results=results, fd_check=fd,
                                             timing=timing, jax=jax.__version__), indent=1))
    if args.plot:
        plot(log, results, names, args.plot)
    return 0


def plot(log: list[dict], results: dict, names: tuple[str, ...], path: Path) -> None:
    """Train MPJPE per outer step (held-out before/after as markers) and the tuned weights (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in log]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, [e["train_mpjpe_mm"] for e in log], "o-", label="train (seed 0)")
    a.plot([0, steps[-1]], [results["initial"]["heldout_mm"], results["final"]["heldout_mm"]], "s--",
           label="held-out (seed 1), before / after")
    a.set_xlabel("outer step (one value_and_grad through the fit)")
    a.set_ylabel("MPJPE of fitted keypoints (mm)")
    a.legend()
    for n in names:
        b.semilogy(steps, [e["weights"][n] / log[0]["weights"][n] for e in log], "o-", label=n)
    b.set_xlabel("outer step")
    b.set_ylabel("weight / initial weight")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
