"""`h4d eval RESULT_DIR GT`: accuracy of a result against ground truth.

GT is a capture directory with gt.npz (or a gt.npz file). Prints one row per stage present in result.npz
(triangulated, refined, fitted keypoints): MPJPE, PA-MPJPE (Procrustes with scale), PCP, acceleration error,
coverage, reprojection error (px), PVE and interpenetration of the fitted bodies when SMPL parameters are present on
both sides. `--json PATH` also writes everything (per joint, per camera, per person) as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="accuracy of a result against ground truth",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", type=Path, help="result directory (result.npz)")
    p.add_argument("gt", type=Path, help="capture directory with gt.npz, or a gt.npz file")
    p.add_argument("--json", type=Path, default=None, help="write the full report as JSON")
    p.add_argument("--body-model", type=Path, default=None, help="body model of the result (default: embedded)")
    p.set_defaults(func=run)


def run(args) -> int:
    from h4djax.body import load_body_model
    from h4djax.eval.report import evaluate, format_table, load_ground_truth, load_result, write_report

    report = evaluate(load_result(args.result), load_ground_truth(args.gt), load_body_model(args.body_model))
    print(format_table(report))
    if args.json is not None:
        write_report(report, args.json)
    return 0
