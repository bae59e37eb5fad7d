"""`h4d demo`: the main job on the embedded default (what `make demo` runs).

Generates a synthetic two-person close-interaction capture with known ground truth (16 cameras, a hug, the hard
detector-noise preset), runs every stage of the engine on it (2D filtering, robust triangulation, whole-sequence
refinement, three-stage body fit), prints per-stage accuracy against ground truth and timings, and writes:

    OUT/capture/        the synthetic capture (FORMATS.md; reusable with `h4d fit`)
    OUT/result/         result.npz + report.json of `h4d fit`
    OUT/eval.json       every metric (per joint, per camera, per person)
    OUT/rig_3d.png      the rig with ground-truth and fitted skeletons
    OUT/views.png       a few camera views: detections, ground truth and the fit projected
    OUT/joint_error.png error per joint for each stage
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from h4djax.refine.limbs import LIMBS

REPO = Path(__file__).resolve().parents[2]


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="synthetic two-person capture -> every stage -> accuracy and pictures",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--scenario", default="hug")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path, default=None, help="engine config preset (default: the paper's values)")
    p.add_argument("--no-collision", action="store_true", help="stage-3 collision weight 0")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from h4djax.body import load_body_model
    from h4djax.commands.synth import make_config
    from h4djax.config import load_config
    from h4djax.eval.report import evaluate, format_table, load_ground_truth, load_result
    from h4djax.io.capture import read_capture
    from h4djax.io.result import write_result
    from h4djax.pipeline import fit_capture
    from h4djax.synth.generate import generate, write_synth_capture

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    preset = REPO / "configs" / "synth_hard.toml"
    scfg = make_config(preset if preset.exists() else None, args.cameras, args.frames, args.scenario, args.seed)
    print(f"[1/3] synthetic capture: {scfg.motion.scenario}, {scfg.rig.num_cameras} cameras, "
          f"{scfg.motion.num_frames} frames, seed {scfg.seed}"
          + ("" if preset.exists() else " (configs/synth_hard.toml missing: default noise)"))
    model = load_body_model(None)
    t0 = time.perf_counter()
    sc = generate(scfg, model, progress=True)
    write_synth_capture(out / "capture", sc)
    t_synth = time.perf_counter() - t0

    print("[2/3] engine: filter -> triangulate -> refine -> body fit")
    cfg = load_config(args.config)
    if args.no_collision:
        cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, stages=tuple(
            dataclasses.replace(s, w_collision=0.0) for s in cfg.fit.stages)))
    capture = read_capture(out / "capture")
    fit = fit_capture(capture, cfg, model, progress=True)
    write_result(out / "result", fit.result, fit.report)

    print("[3/3] accuracy against ground truth")
    gt = load_ground_truth(out / "capture")
    report = evaluate(load_result(out / "result"), gt, model)
    print(format_table(report))
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    timings = {"synth": round(t_synth, 2), **fit.report["timings_s"]}
    print("timings (s, first run: includes JIT compilation): "
          + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    _plots(out, capture, fit.result, report)
    print(f"wrote {out}/ (rig_3d.png, views.png, joint_error.png, result/, capture/) in "
          f"{time.perf_counter() - t_all:.0f} s")
    return 0


def _plots(out: Path, capture, result, report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from h4djax.geometry.cameras_np import camera_centers_np, project_np

    gt = capture.gt.joints3d
    fit = result.keypoints3d
    F, P = gt.shape[:2]
    f = F // 2
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]

    # 1. Rig + skeletons (world frame; synthetic captures are y-up).
    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    c = camera_centers_np(capture.cameras)
    ax.scatter(c[:, 0], c[:, 2], c[:, 1], marker="^", color="k", label="cameras")
    for p in range(P):
        for a, b in LIMBS:
            ax.plot(*[[gt[f, p, a, i], gt[f, p, b, i]] for i in (0, 2, 1)], color="0.5", lw=3, alpha=0.6)
            ax.plot(*[[fit[f, p, a, i], fit[f, p, b, i]] for i in (0, 2, 1)], color=colors[p % 4], lw=1.5)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_zlabel("y (m, up)")
    ax.set_title(f"frame {f}: ground truth (grey) vs fit (colour)")
    fig.tight_layout()
    fig.savefig(out / "rig_3d.png", dpi=110)
    plt.close(fig)

    # 2. A few views: detections (grey dots), ground truth projected (green), fit projected (colour).
    views = np.unique(np.linspace(0, capture.cameras.num_cams - 1, 4).round().astype(int))
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 3.6))
    for ax, v in zip(np.atleast_1d(axes), views):
        cam = capture.cameras.select([int(v)])
        uv_gt, _ = project_np(cam, gt[f])
        uv_fit, _ = project_np(cam, fit[f])
        det = capture.keypoints[f, v]
        ok = det[..., 2] > 0
        ax.scatter(det[..., 0][ok], det[..., 1][ok], s=8, color="0.4", label="detections")
        for p in range(P):
            for a, b in LIMBS:
                ax.plot(uv_gt[0, p, [a, b], 0], uv_gt[0, p, [a, b], 1], color="tab:green", lw=2.5, alpha=0.6)
                ax.plot(uv_fit[0, p, [a, b], 0], uv_fit[0, p, [a, b], 1], color=colors[p % 4], lw=1.2)
        # Zoom on the people (ground-truth box + 15% margin), clipped to the image.
        w, h = np.asarray(cam.size)[0]
        lo, hi = np.nanmin(uv_gt[0].reshape(-1, 2), 0), np.nanmax(uv_gt[0].reshape(-1, 2), 0)
        pad = 0.15 * (hi - lo).max()
        ax.set_xlim(max(lo[0] - pad, 0), min(hi[0] + pad, w))
        ax.set_ylim(min(hi[1] + pad, h), max(lo[1] - pad, 0))
        ax.set_aspect("equal")
        ax.set_title(f"{cam.names[0]}, frame {f}")
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=7)
    fig.suptitle("grey: noisy detections, green: ground truth, colour: fitted body keypoints")
    fig.tight_layout()
    fig.savefig(out / "views.png", dpi=100)
    plt.close(fig)

    # 3. Error per joint per stage.
    from h4djax.refine.limbs import COCO17_NAMES

    fig, ax = plt.subplots(figsize=(10, 3.8))
    stages = list(report["stages"])
    width = 0.8 / max(len(stages), 1)
    for i, s in enumerate(stages):
        vals = [np.nan if v is None else v for v in report["stages"][s]["per_joint_mm"]]
        ax.bar(np.arange(17) + i * width, vals, width, label=f"{s} ({report['stages'][s]['mpjpe_mm']} mm)")
    ax.set_xticks(np.arange(17) + 0.4 - width / 2)
    ax.set_xticklabels(COCO17_NAMES, rotation=45, ha="right")
    ax.set_ylabel("mean error (mm)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "joint_error.png", dpi=110)
    plt.close(fig)
