"""Benchmark of the synthetic capture generator (issue 4) and of the interpenetration metric it relies on.

1. `generate` on the default rig (20 cameras) x 600 frames, hug, hard preset: per-step wall times of a first call
   (JIT compilation included) and of a second call with another seed (compiled programs reused), plus the measured
   ground-truth interpenetration and noise statistics.
2. Winding numbers on the body mesh: the hierarchical version (`winding_and_distance`, clusters of <= 64 triangles,
   8 exact near clusters) against the exact O(points x triangles) sum (`winding_numbers_exact`) in the same run:
   time ratio and agreement.

Writes bench/synth.json and the section of bench/RESULTS.md between its markers.

    .venv/bin/python bench/synth.py [--frames 600] [--cameras 20]
"""

from __future__ import annotations

import argparse
import datetime
import dataclasses
import json
import os
import platform
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from h4djax.body import load_body_model
from h4djax.eval.metrics import cluster_faces, winding_and_distance, winding_numbers_exact
from h4djax.synth.config import load_synth_config, override
from h4djax.synth.generate import generate

HERE = Path(__file__).resolve().parent


def _timed(fn, reps=3):
    out = jax.block_until_ready(fn())
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return out, float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--cameras", type=int, default=20)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    model = load_body_model()
    cfg = load_synth_config(HERE.parent / "configs" / "synth_hard.toml")
    cfg = override(override(cfg, "rig", num_cameras=args.cameras), "motion", num_frames=args.frames, scenario="hug")
    t0 = time.perf_counter()
    first = generate(cfg, model, measure_frames=60)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = generate(dataclasses.replace(cfg, seed=1), model, measure_frames=60)
    t_second = time.perf_counter() - t0

    # Winding numbers: hierarchical vs exact on the same points (body template, 2000 points near the skin).
    v = np.asarray(model.v_template, np.float64)
    f = np.asarray(model.faces)
    rng = np.random.default_rng(0)
    pts = v[rng.choice(len(v), 2000, replace=False)] + rng.normal(scale=0.02, size=(2000, 3))
    P, V, Fc = jnp.asarray(pts, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(f)
    cl = cluster_faces(f, v)
    fast = jax.jit(lambda p, vv: winding_and_distance(p, vv, cl))
    exact = jax.jit(lambda p, vv: winding_numbers_exact(p, vv, Fc))
    t0 = time.perf_counter()
    (wf, df), t_fast = _timed(lambda: fast(P, V))
    c_fast = time.perf_counter() - t0 - 4 * t_fast
    t0 = time.perf_counter()
    (we, de), t_exact = _timed(lambda: exact(P, V), reps=1)
    c_exact = time.perf_counter() - t0 - 2 * t_exact
    wf, we, df, de = (np.asarray(x) for x in (wf, we, df, de))
    mis = int(np.sum((np.abs(wf) > 0.5) != (np.abs(we) > 0.5)))

    res = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_start": round(load0, 1), "load_average_end": round(os.getloadavg()[0], 1),
        "command": f".venv/bin/python bench/synth.py --frames {args.frames} --cameras {args.cameras}",
        "generate": {"frames": args.frames, "cameras": args.cameras, "people": 2,
                     "first_call_s": round(t_first, 2), "second_call_s": round(t_second, 2),
                     "steps_first_s": first.stats["timings_s"], "steps_second_s": second.stats["timings_s"],
                     "interpenetration_seed0": first.stats["interpenetration"],
                     "interpenetration_seed1": second.stats["interpenetration"],
                     "contact_seed0": first.stats["contact"], "noise_labels_seed0": first.stats["noise_labels"]},
        "winding": {"points": len(pts), "triangles": int(len(f)), "clusters": list(cl.faces.shape[:2]),
                    "hierarchical_s": round(t_fast, 4), "exact_s": round(t_exact, 3),
                    "speedup": round(t_exact / t_fast, 1), "compile_hierarchical_s": round(c_fast, 2),
                    "compile_exact_s": round(c_exact, 2), "max_abs_winding_diff": round(float(np.abs(wf - we).max()), 4),
                    "inside_mismatches": mis, "max_distance_diff_mm": round(1000 * float(np.abs(df - de).max()), 4)},
    }
    (HERE / "synth.json").write_text(json.dumps(res, indent=2) + "\n")
    g, w = res["generate"], res["winding"]
    ip0, ip1 = g["interpenetration_seed0"], g["interpenetration_seed1"]
    nl = g["noise_labels_seed0"]
    steps = lambda d: ", ".join(f"{k} {v}" for k, v in d.items() if k != "total")  # noqa: E731
    section = f"""<!-- bench/synth.py: begin -->
## Synthetic capture generation (bench/synth.py, issue 4)

Machine: {res['machine']}, shared with other engineers' jobs (load average {res['load_average_start']} at the start,
{res['load_average_end']} at the end: wall times are several times those of an idle machine), no GPU; jax
{jax.__version__}. Date 2026-11-25. Command: `{res['command']}`.

`generate` (hug, `configs/synth_hard.toml`, {g['cameras']} cameras x {g['frames']} frames x 2 people, full meshes of
13,718 vertices): first call {g['first_call_s']} s (JIT compilation included), second call with another seed
{g['second_call_s']} s. Steps of the second call (s): {steps(g['steps_second_s'])}.

Ground-truth interpenetration (generalized winding numbers, every 3rd vertex of each body tested in the other, 60
evenly spaced frames): seed 0 max {ip0['max_depth_mm']} mm, mean of the per-frame max {ip0['mean_max_depth_mm']} mm,
95th percentile {ip0['p95_max_depth_mm']} mm, {ip0['frames_with_penetration']}/60 frames with any vertex inside;
seed 1 max {ip1['max_depth_mm']} mm, mean {ip1['mean_max_depth_mm']} mm. Residual penetration comes from the arms
wrapping the partner (forearm across the flank) and from transitions; torsos are separated by the solver.

Detector noise (seed 0, share of keypoints per effect): {', '.join(f'{k} {100 * v:.2f}%' for k, v in nl.items())}.

Winding numbers on the body mesh ({w['triangles']} triangles, {w['points']} points within ~2 cm of the skin):
hierarchical {w['hierarchical_s']} s vs exact {w['exact_s']} s in the same run = **{w['speedup']}x**; max |w
difference| {w['max_abs_winding_diff']}, inside/outside mismatches {w['inside_mismatches']}, max distance difference
{w['max_distance_diff_mm']} mm. Compile: {w['compile_hierarchical_s']} s / {w['compile_exact_s']} s.
<!-- bench/synth.py: end -->
"""
    results = HERE / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    pat = re.compile(r"<!-- bench/synth.py: begin -->.*?<!-- bench/synth.py: end -->\n", re.S)
    text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
    results.write_text(text)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
