"""`h4d sweep CAPTURE --cameras 6,8,...,20`: accuracy and time per camera count (Harmony4D Table 2 for h4djax).

For each count N, N cameras evenly spaced in the capture's camera order (a ring rig is stored in angular order, so
this keeps them roughly equidistant, as the paper does) are fitted with the same config. Reported per count: MPJPE
of the fitted keypoints against the all-camera result (the paper's measure) and against ground truth when the
capture has gt.npz, the triangulation's valid fraction, and wall time. Each count has its own shapes, so its first
run includes compilation; `--repeat 2` times a second, steady-state run too. Writes sweep.json, sweep.md and
sweep.png to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from h4djax.commands.fit import add_fit_arguments, load_setup
from h4djax.errors import H4DError


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="accuracy and time per camera count",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fit_arguments(p)
    p.add_argument("--cameras", default="6,8,10,12,14,16,18,20", help="comma-separated camera counts")
    p.add_argument("--out", type=Path, required=True, help="directory for sweep.json / sweep.md / sweep.png")
    p.add_argument("--repeat", type=int, default=1, help="runs per count (the last one is reported as steady)")
    p.set_defaults(func=run)


def evenly_spaced(num_cams: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(num_cams) (the first camera always included)."""
    return sorted({int(round(i * num_cams / count)) % num_cams for i in range(count)})


def _mpjpe_mm(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float | None:
    err = np.linalg.norm(a - b, axis=-1)
    ok = np.isfinite(err) if valid is None else (np.isfinite(err) & valid)
    return float(1000 * err[ok].mean()) if ok.any() else None


def run(args) -> int:
    from h4djax.pipeline import fit_capture

    cfg, model, capture = load_setup(args)
    names = list(capture.cameras.names)
    try:
        counts = sorted({int(c) for c in args.cameras.split(",") if c.strip()})
    except ValueError:
        raise H4DError(f"--cameras: expected comma-separated integers, got {args.cameras!r}") from None
    counts = [c for c in counts if 2 <= c <= len(names)]
    if not counts:
        raise H4DError(f"--cameras: no count between 2 and the capture's {len(names)} cameras")
    gt = capture.gt.joints3d if capture.gt is not None else None
    rows, full = [], None
    for count in sorted(counts, reverse=True):  # the largest count first: it is the reference
        subset = [names[i] for i in evenly_spaced(len(names), count)]
        times = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            fit = fit_capture(capture, cfg, model, cameras=subset, progress=not args.quiet)
            times.append(time.perf_counter() - t0)
        kp = fit.result.keypoints3d
        if full is None:
            full = kp
        row = {"cameras": count, "names": subset, "wall_s_first": round(times[0], 2),
               "wall_s_steady": round(times[-1], 2) if len(times) > 1 else None,
               "mpjpe_vs_all_mm": _mpjpe_mm(kp, full),
               "mpjpe_vs_gt_mm": None if gt is None else _mpjpe_mm(kp, gt),
               "triangulated_valid_pct": round(100 * float(fit.result.joints3d_triangulated[..., 3].mean()), 2),
               "stage_s": fit.report["timings_s"]}
        rows.append(row)
        print(f"sweep: {count:2d} cameras  MPJPE vs all {row['mpjpe_vs_all_mm']:.1f} mm"
              + ("" if row["mpjpe_vs_gt_mm"] is None else f", vs GT {row['mpjpe_vs_gt_mm']:.1f} mm")
              + f", {times[-1]:.1f} s")
    rows.sort(key=lambda r: r["cameras"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"capture": str(args.capture), "rows": rows}, indent=2) + "\n")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| cameras | " + " | ".join(str(r["cameras"]) for r in rows) + " |",
             "|---|" + "---|" * len(rows),
             "| MPJPE vs all-camera result (mm) | " + " | ".join(fmt(r["mpjpe_vs_all_mm"]) for r in rows) + " |",
             "| MPJPE vs ground truth (mm) | " + " | ".join(fmt(r["mpjpe_vs_gt_mm"]) for r in rows) + " |",
             "| valid triangulated joints (%) | " + " | ".join(fmt(r["triangulated_valid_pct"]) for r in rows) + " |",
             "| wall time, first run (s) | " + " | ".join(fmt(r["wall_s_first"]) for r in rows) + " |"]
    if args.repeat > 1:
        lines.append("| wall time, steady (s) | " + " | ".join(fmt(r["wall_s_steady"]) for r in rows) + " |")
    table = "\n".join(lines)
    (out / "sweep.md").write_text(table + "\n")
    print(table)
    _plot(rows, out / "sweep.png")
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["cameras"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(n, [r["mpjpe_vs_all_mm"] for r in rows], "o-", label="vs all-camera result")
    if rows[0]["mpjpe_vs_gt_mm"] is not None:
        ax[0].plot(n, [r["mpjpe_vs_gt_mm"] for r in rows], "s-", label="vs ground truth")
    ax[0].set_xlabel("cameras")
    ax[0].set_ylabel("MPJPE of fitted keypoints (mm)")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    key = "wall_s_steady" if rows[0]["wall_s_steady"] is not None else "wall_s_first"
    ax[1].plot(n, [r[key] for r in rows], "o-")
    ax[1].set_xlabel("cameras")
    ax[1].set_ylabel(f"wall time (s, {'steady' if key == 'wall_s_steady' else 'first run, with compile'})")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
