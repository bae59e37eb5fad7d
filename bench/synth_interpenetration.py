"""Ground-truth interpenetration of the synthetic captures, with and without the final de-penetration step.

For each scenario: generate (hard preset motion, noise off, 2 cameras: the rig does not change the motion) with
`depenetrate_rounds` = 0 and the default, then measure on EVERY frame and EVERY vertex (both directions) the
deepest vertex of one person inside the other (`eval.metrics.interpenetration`), and how much the step changed the
motion: keypoint displacement and mean keypoint acceleration (mm / frame^2).

    .venv/bin/python bench/synth_interpenetration.py --frames 120 --seed 1 --scenarios hug,wrestle,dance,fencing
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import h4djax  # noqa: F401  (before jax: its XLA flag workaround)
import jax.numpy as jnp
import numpy as np

from h4djax.body import load_body_model
from h4djax.eval.metrics import interpenetration
from h4djax.synth.config import load_synth_config
from h4djax.synth.generate import _forward, body_topology, generate


def run(scenario: str, frames: int, seed: int, rounds: int, model, topo) -> dict:
    cfg = load_synth_config("configs/synth_hard.toml")
    cfg = dataclasses.replace(cfg, seed=seed, rig=dataclasses.replace(cfg.rig, num_cameras=2),
                              motion=dataclasses.replace(cfg.motion, scenario=scenario, num_frames=frames,
                                                         **({} if rounds < 0 else {"depenetrate_rounds": rounds})),
                              noise=dataclasses.replace(cfg.noise, enabled=False))
    t = time.perf_counter()
    sc = generate(cfg, model, measure_frames=0)
    seconds = time.perf_counter() - t
    P = sc.betas.shape[0]
    rv = np.concatenate([sc.global_orient[..., None, :], sc.body_pose.reshape(frames, P, 23, 3)], 2)
    v, _, _ = _forward(model, rv.transpose(1, 0, 2, 3).astype(np.float64), sc.betas, sc.transl.transpose(1, 0, 2))
    d = 1000 * np.asarray(interpenetration(jnp.asarray(v[0]), jnp.asarray(v[1]), topo.clusters).depth_max)
    return {"seconds": round(seconds, 1), "depenetrate_s": sc.stats["timings_s"].get("depenetrate", 0.0),
            "max_mm": round(float(d.max()), 2), "mean_of_max_mm": round(float(d.mean()), 2),
            "p95_mm": round(float(np.percentile(d, 95)), 2), "frames_over_5mm": int((d > 5).sum()),
            "lowest_vertex_mm": round(1000 * float(v[..., 1].min()), 2), "kpts": sc.joints3d,
            "stats": sc.stats.get("depenetration")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenarios", default="hug,wrestle,dance,fencing")
    ap.add_argument("--json", default="bench/synth_interpenetration.json")
    a = ap.parse_args()
    model = load_body_model()
    topo = body_topology(model)
    acc = lambda k: 1000 * float(np.linalg.norm(k[2:] - 2 * k[1:-1] + k[:-2], axis=-1).mean())  # noqa: E731
    out = {}
    print(f"{'scenario':9s} {'step':5s} {'max mm':>7s} {'mean mm':>8s} {'p95':>6s} {'>5mm':>5s} {'floor mm':>8s} "
          f"{'accel':>6s} {'moved mm':>8s} {'gen s':>6s} {'step s':>6s}")
    for s in a.scenarios.split(","):
        off = run(s, a.frames, a.seed, 0, model, topo)
        on = run(s, a.frames, a.seed, -1, model, topo)
        moved = 1000 * np.linalg.norm(on["kpts"] - off["kpts"], axis=-1)
        for name, r in (("off", off), ("on", on)):
            print(f"{s:9s} {name:5s} {r['max_mm']:7.1f} {r['mean_of_max_mm']:8.2f} {r['p95_mm']:6.1f} "
                  f"{r['frames_over_5mm']:5d} {r['lowest_vertex_mm']:8.2f} {acc(r['kpts']):6.2f} "
                  f"{(moved.mean() if name == 'on' else 0.0):8.1f} {r['seconds']:6.1f} {r['depenetrate_s']:6.1f}")
        out[s] = {k: {kk: vv for kk, vv in r.items() if kk != "kpts"} | {"accel_mm_per_frame2": round(acc(r["kpts"]),
                                                                                                        2)}
                  for k, r in (("off", off), ("on", on))}
        out[s]["on"]["keypoint_change_mm"] = {"mean": round(float(moved.mean()), 1),
                                              "p95": round(float(np.percentile(moved, 95)), 1),
                                              "max": round(float(moved.max()), 1)}
    with open(a.json, "w") as f:
        json.dump({"frames": a.frames, "seed": a.seed, "results": out}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
