"""`h4d demo`: the main job on the embedded default (what `make demo` runs).

Generates a synthetic two-person close-interaction capture with known ground truth (16 cameras, a hug, the hard
detector-noise preset `configs/synth_hard.toml`), runs every engine stage that is available (the stage registry of
`h4djax.eval.stages`: 2D filtering + robust triangulation, whole-sequence refinement, three-stage body fit with the
inter-person collision term; engine config = the paper's values with the cached-grid collision schedule of
`configs/collision_fast.toml` unless --config is given), prints
each stage's accuracy against the ground truth as soon as it has run, the timings, and writes:

    OUT/capture/        the synthetic capture (FORMATS.md; reusable with `h4d fit` / `h4d eval`)
    OUT/result/         result.npz (+ report.json) of the stages that ran
    OUT/eval.json       every metric (per stage, per joint, per camera, per person; mesh metrics)
    OUT/rig_3d.png      the rig with the ground-truth and estimated skeletons
    OUT/views.png       a few camera views: detections, ground truth and the estimate projected
    OUT/joint_error.png error per joint for each stage
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="synthetic two-person capture -> every stage -> accuracy and pictures",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    p.add_argument("--cameras", type=int, default=16, help="cameras in the synthetic rig (default 16)")
    p.add_argument("--frames", type=int, default=150, help="frames at 30 fps (default 150)")
    p.add_argument("--scenario", default="hug", help="hug, wrestle, dance or fencing (default hug)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", type=Path, default=None,
                   help="SynthConfig preset (default configs/synth_hard.toml)")
    p.add_argument("--config", type=Path, default=None,
                   help="engine config preset (default: the paper's values with the CPU-affordable collision "
                        "schedule of configs/collision_fast.toml; pass configs/harmony4d.toml for the paper's own)")
    p.add_argument("--no-collision", action="store_true", help="stage-3 collision weight 0")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from h4djax.body import load_body_model
    from h4djax.commands.synth import make_config
    from h4djax.config import load_config, to_dict
    from h4djax.eval.report import STAGE_KEYS, evaluate, evaluate_stage, format_table, load_ground_truth
    from h4djax.eval.stages import StageContext, resolve_stages, run_stages
    from h4djax.io.capture import read_capture
    from h4djax.synth.generate import generate, write_synth_capture

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    preset = args.preset or (REPO / "configs" / "synth_hard.toml")
    preset = preset if Path(preset).exists() else None
    scfg = make_config(preset, args.cameras, args.frames, args.scenario, args.seed)
    print(f"[1/3] synthetic capture: {scfg.motion.scenario}, {scfg.rig.num_cameras} cameras, "
          f"{scfg.motion.num_frames} frames, seed {scfg.seed}, noise preset {preset or 'default'}", flush=True)
    model = load_body_model(None)
    t0 = time.perf_counter()
    sc = generate(scfg, model, progress=True, measure_frames=min(30, scfg.motion.num_frames))
    write_synth_capture(out / "capture", sc)
    t_synth = time.perf_counter() - t0
    ip = sc.stats.get("interpenetration", {})
    print(f"  ground-truth interpenetration: max {ip.get('max_depth_mm')} mm, mean per-frame max "
          f"{ip.get('mean_max_depth_mm')} mm over {ip.get('frames_measured')} frames; detector-noise labels "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in sc.stats["noise_labels"].items() if v > 0), flush=True)

    # The paper's collision schedule (a fresh 32^3 SDF grid per person-frame in every iteration of every epoch) costs
    # ~0.3 s per frame pair and iteration on a 2-core CPU; the demo uses the cached-grid, last-epoch schedule whose
    # accuracy matches it (bench/RESULTS.md, "Collision in the body fit") unless a config is given.
    config_path = args.config or (REPO / "configs" / "collision_fast.toml")
    config_path = config_path if (args.config or Path(config_path).exists()) else None
    cfg = load_config(config_path)
    print(f"  engine config: {config_path or 'defaults'} (onto the paper's values)", flush=True)
    if args.no_collision:
        cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, stages=tuple(
            dataclasses.replace(s, w_collision=0.0) for s in cfg.fit.stages)))
    capture = read_capture(out / "capture")
    gt = load_ground_truth(out / "capture")
    stages = resolve_stages()
    print("[2/3] engine stages: " + ", ".join(s.name + ("" if ok else f" (unavailable: {why})")
                                              for s, ok, why in stages), flush=True)
    ctx = StageContext(capture=capture, config=cfg, model=model)
    keys = dict((key, name) for name, key in STAGE_KEYS)

    def scored(stage, seconds, new):
        for key, name in keys.items():
            if key in new:
                m = evaluate_stage(new[key], gt)
                print(f"  {stage.name:<11s} {seconds:6.1f} s   {name}: MPJPE {m['mpjpe_mm']} mm, PA-MPJPE "
                      f"{m['pa_mpjpe_mm']} mm, PCP {m['pcp_pct']} %, coverage {m['coverage_pct']} %", flush=True)

    timings = run_stages(ctx, on_done=scored, progress=True)
    _write_result(out / "result", ctx, model, {"timings_s": timings, "stage_info": ctx.info,
                                                "config": to_dict(cfg)})

    print("[3/3] accuracy against ground truth", flush=True)
    report = evaluate(ctx.result, gt, model)
    report["timings_s"] = {"synth": round(t_synth, 2), **timings}
    report["synth"] = {k: v for k, v in sc.stats.items()}
    print(format_table(report))
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    _plots(out, capture, ctx.result, report)
    print("timings (s, first run: includes JIT compilation): "
          + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()))
    print(f"wrote {out}/ (capture/, result/, eval.json, rig_3d.png, views.png, joint_error.png) in "
          f"{time.perf_counter() - t_all:.0f} s")
    return 0


def _write_result(path: Path, ctx, model, report: dict) -> None:
    """result.npz + report.json: the full FORMATS.md result when the fit ran, else the arrays of the stages that
    did (same names)."""
    from h4djax.io.result import FitResult, write_result

    r = ctx.result
    names = tuple(ctx.capture.cameras.names)
    need = ("joints3d_triangulated", "joints3d", "global_orient", "body_pose", "betas", "transl", "smpl_joints",
            "keypoints3d")
    if all(k in r for k in need):
        res = FitResult(**{k: r[k] for k in need}, camera_names=names, joint_set="coco17",
                        body_model=f"{model.name} {model.sha256}".strip())
        write_result(path, res, report)
        return
    path.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path / "result.npz", **r, camera_names=np.asarray(names), joint_set=np.asarray("coco17"))
    (path / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def _estimate(result: dict):
    """The most refined 3D keypoints available [F,P,17,3] (NaN where invalid) and the stage they come from."""
    for key, name in (("keypoints3d", "fit"), ("joints3d", "refined"), ("joints3d_triangulated", "triangulated")):
        if key in result:
            a = np.asarray(result[key], np.float64)
            if a.shape[-1] == 4:
                a = np.where(a[..., 3:] > 0.5, a[..., :3], np.nan)
            return a, name
    return None, None


def _plots(out: Path, capture, result: dict, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from h4djax.geometry.cameras_np import camera_centers_np, project_np
    from h4djax.refine.limbs import COCO17_NAMES, LIMBS

    gt = capture.gt.joints3d
    est, est_name = _estimate(result)
    F, P = gt.shape[:2]
    # The frame where the two people are closest (the interesting one).
    d = np.linalg.norm(gt[:, 0, :, None] - gt[:, 1, None], axis=-1).min(axis=(1, 2)) if P > 1 else np.zeros(F)
    f = int(np.argmin(d))
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]

    # 1. Rig + skeletons (world frame, y up): cameras with viewing directions, ground truth (thick grey) and the
    #    estimate (colour); plus a close-up of the people.
    fig = plt.figure(figsize=(13, 6))
    c = camera_centers_np(capture.cameras)
    look = np.asarray(capture.cameras.R)[:, 2, :]
    for i, zoom in enumerate((False, True)):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        if not zoom:
            ax.scatter(c[:, 0], c[:, 2], c[:, 1], marker="^", color="k", s=25)
            ax.quiver(c[:, 0], c[:, 2], c[:, 1], look[:, 0], look[:, 2], look[:, 1], length=0.8, color="0.4", lw=0.8)
            for n, name in enumerate(capture.cameras.names):
                ax.text(c[n, 0], c[n, 2], c[n, 1] + 0.15, name[-2:], fontsize=6)
        for p in range(P):
            for a, b in LIMBS:
                ax.plot(*[[gt[f, p, a, k], gt[f, p, b, k]] for k in (0, 2, 1)], color="0.55", lw=4, alpha=0.6)
                if est is not None:
                    ax.plot(*[[est[f, p, a, k], est[f, p, b, k]] for k in (0, 2, 1)], color=colors[p % 4], lw=1.6)
        if zoom:
            ctr = np.nanmean(gt[f].reshape(-1, 3), 0)
            for setlim, k in ((ax.set_xlim, 0), (ax.set_ylim, 2), (ax.set_zlim, 1)):
                setlim(ctr[k] - 1.0, ctr[k] + 1.0)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("z (m)")
        ax.set_zlabel("y (m, up)")
        ax.set_title(("rig" if not zoom else "close-up") + f", frame {f}")
    fig.suptitle(f"grey: ground truth, colour: {est_name or 'no estimate'}")
    fig.tight_layout()
    fig.savefig(out / "rig_3d.png", dpi=100)
    plt.close(fig)

    # 2. Four views: detections (dots, size ~ confidence), ground truth projected (green), estimate (colour).
    views = np.unique(np.linspace(0, capture.cameras.num_cams - 1, 4).round().astype(int))
    fig, axes = plt.subplots(1, len(views), figsize=(4.4 * len(views), 4.2))
    for ax, v in zip(np.atleast_1d(axes), views):
        cam = capture.cameras.select([int(v)])
        uv_gt, _ = project_np(cam, gt[f])
        det = capture.keypoints[f, v]
        ok = det[..., 2] > 0
        ax.scatter(det[..., 0][ok], det[..., 1][ok], s=4 + 30 * det[..., 2][ok], color="0.3", zorder=3,
                   label="detections")
        for p in range(P):
            for a, b in LIMBS:
                ax.plot(uv_gt[0, p, [a, b], 0], uv_gt[0, p, [a, b], 1], color="tab:green", lw=3, alpha=0.5)
            if est is not None:
                uv_e, _ = project_np(cam, np.nan_to_num(est[f, p], nan=0.0))
                ok_e = np.isfinite(est[f, p]).all(-1)
                for a, b in LIMBS:
                    if ok_e[a] and ok_e[b]:
                        ax.plot(uv_e[0, [a, b], 0], uv_e[0, [a, b], 1], color=colors[p % 4], lw=1.3)
        w, h = np.asarray(cam.size)[0]
        lo, hi = uv_gt[0].reshape(-1, 2).min(0), uv_gt[0].reshape(-1, 2).max(0)
        pad = 0.2 * (hi - lo).max()
        ax.set_xlim(max(lo[0] - pad, 0), min(hi[0] + pad, w))
        ax.set_ylim(min(hi[1] + pad, h), max(lo[1] - pad, 0))
        ax.set_aspect("equal")
        model = "fisheye" if bool(np.asarray(cam.fisheye)[0]) else "opencv"
        ax.set_title(f"{cam.names[0]} ({w}x{h}, {model}), frame {f}", fontsize=9)
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(f"dots: noisy detections (size = confidence), green: ground truth, colour: {est_name}")
    fig.tight_layout()
    fig.savefig(out / "views.png", dpi=100)
    plt.close(fig)

    # 3. Error per joint per stage.
    fig, ax = plt.subplots(figsize=(11, 4))
    stages = list(report["stages"])
    width = 0.8 / max(len(stages), 1)
    for i, s in enumerate(stages):
        vals = [np.nan if v is None else v for v in report["stages"][s]["per_joint_mm"]]
        ax.bar(np.arange(17) + i * width, vals, width, label=f"{s} (MPJPE {report['stages'][s]['mpjpe_mm']} mm)")
    ax.set_xticks(np.arange(17) + 0.4 - width / 2)
    ax.set_xticklabels(COCO17_NAMES, rotation=45, ha="right")
    ax.set_ylabel("mean 3D error (mm)")
    ax.set_title("error per keypoint against ground truth")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "joint_error.png", dpi=100)
    plt.close(fig)
