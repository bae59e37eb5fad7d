"""`h4d fit CAPTURE --out OUT`: 2D keypoints (or videos) of a calibrated capture -> 3D keypoints and bodies.

    h4d fit CAPTURE --out OUT [--config PRESET.toml] [--cameras cam01,cam03,...] [--body-model SMPL.pkl|.npz]
                    [--vertices] [--no-collision] [--harmony4d]

CAPTURE is the capture directory of FORMATS.md. Without keypoints2d.npz but with videos/ or images/, the ONNX
front end runs first and caches keypoints2d.npz; with associated=False keypoints, identities are associated first.
OUT receives result.npz and report.json (FORMATS.md); --harmony4d also writes the Harmony4D `processed_data/`
layout. When the capture has gt.npz, the accuracy of every stage is printed and stored in report.json["eval"].
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from h4djax.config import Config, load_config


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="triangulate, refine and fit bodies to a capture",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fit_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="result directory (created)")
    p.add_argument("--cameras", default=None, help="comma-separated camera names to use (default: all)")
    p.add_argument("--vertices", action="store_true", help="also store the fitted meshes [F,P,V,3] in result.npz")
    p.add_argument("--harmony4d", action="store_true", help="also write the Harmony4D processed_data/ layout")
    p.set_defaults(func=run)


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `fit` and `sweep`."""
    p.add_argument("capture", type=Path, help="capture directory (cameras.toml + keypoints2d.npz or videos/)")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML preset mapped onto h4djax.config.Config (default: the paper's values, "
                        "configs/harmony4d.toml)")
    p.add_argument("--body-model", type=Path, default=None,
                   help="SMPL-layout body model (.pkl official SMPL, or .npz); default: the embedded Anny model")
    p.add_argument("--no-collision", action="store_true", help="set the stage-3 collision weight to 0")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_setup(args) -> tuple[Config, object, object]:
    """(config, body model, capture with associated keypoints) from the shared arguments."""
    from h4djax.body import load_body_model
    from h4djax.detect.pipeline import ensure_keypoints
    from h4djax.io.capture import read_capture

    cfg = load_config(args.config)
    if args.no_collision:
        cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, stages=tuple(
            dataclasses.replace(s, w_collision=0.0) for s in cfg.fit.stages)))
    model = load_body_model(args.body_model)
    capture = read_capture(args.capture, require_keypoints=False)
    capture = ensure_keypoints(capture, cfg, progress=not args.quiet, directory=args.capture)
    return cfg, model, capture


def evaluate_against_gt(capture_dir: Path, out_dir: Path, model) -> dict | None:
    """Accuracy of every stage of a written result against the capture's gt.npz (None without ground truth)."""
    from h4djax.eval.report import evaluate, format_table, load_ground_truth, load_result

    if not (capture_dir / "gt.npz").exists():
        return None
    report = evaluate(load_result(out_dir), load_ground_truth(capture_dir), model)
    print(format_table(report))
    return report


def run(args) -> int:
    from h4djax.io.result import write_harmony4d, write_result
    from h4djax.pipeline import fit_capture

    cfg, model, capture = load_setup(args)
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras else None
    fit = fit_capture(capture, cfg, model, cameras=cameras, vertices=args.vertices, progress=not args.quiet)
    write_result(args.out, fit.result, fit.report)
    if args.harmony4d:
        write_harmony4d(args.out, fit.result)
    t = fit.report["timings_s"]
    print(f"h4d fit: {fit.report['frames']} frames, {fit.report['people']} people, {len(fit.result.camera_names)} "
          f"cameras -> {args.out}  (" + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()) + ")")
    rp = fit.report["reprojection_px_median"]["fitted_keypoints"]
    print("median reprojection error of fitted keypoints (px): "
          + ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} -" for k, v in rp.items()))
    ev = evaluate_against_gt(args.capture, args.out, model)
    if ev is not None:
        fit.report["eval"] = ev
        (Path(args.out) / "report.json").write_text(json.dumps(fit.report, indent=2, default=str) + "\n")
    return 0
