"""Acceptance of the collision term in the body fit (issue 7): collision on vs off on synthetic close-interaction
captures with known ground truth, and the cost of each variant.

Captures: `h4djax.synth` (hug and grappling = scenario "wrestle"), `--cameras` cameras, `--frames` frames at `--fps`
(10 fps by default so that 60 frames span the approach AND the embrace / the mount and the guard), noisy 2D
detections (the generator's detector model), seeded. They are generated once into `--cache` and reused.

For every capture the 2D filter, triangulation and refinement run once (`h4djax.pipeline` stage functions), then
the three-stage fit runs once per variant on the same refined keypoints:

- `off`: stage-3 w_collision = 0 (the joints-only forward);
- `sdf:T:K:E`: stage 3 with w_collision = 1 (SDF grids 32^3 as EgoHumans) and the fit's grid cache: every K-th
  iteration, a person-frame's grid is rebuilt if it moved more than T metres since it was built
  (`collision.grid_tolerance`, `collision.grid_refresh`), and the term is on in the last E epochs only
  (`fit.collision_epochs`, 0 = all). `sdf:0:1:0` is the reference (a fresh grid in every iteration, every epoch);
- `default`: the configuration's own values;
- `spheres[:E]`: the sphere proxy (`collision.method = "spheres"`, 128 balls).

Scores against the ground truth of the capture (its SMPL parameters through the same body model):
- MPJPE (mm) of the fitted COCO-17 keypoints (the model's regressor, as `h4d fit` writes them) vs gt joints3d;
- PVE (mm) of the fitted meshes vs the ground-truth meshes;
- interpenetration of the two fitted bodies on every frame (`h4djax.eval.metrics`, exact winding numbers and
  distances, every 2nd vertex both ways): max depth, mean over frames of the per-frame max depth, mean depth of the
  penetrating vertices, frames with penetration; interpenetrating volume (cm^3, 24^3 samples of the boxes'
  intersection per frame) summed over frames. The same numbers for the ground-truth meshes (the generator's bodies
  are not collision-free: arm contacts leave a few cm).
Ratios "variant / off" are reported for depth and volume, and the MPJPE change (acceptance: <= +1 mm).

Timing: the fit's compilation (`lower().compile()`) and its run (one call of the compiled program, blocked) are
reported separately; one run per variant (a fit takes minutes on the shared 2-core machine, absolute times are
noisy under load; the `off` run of the same capture in the same process is the reference for ratios).

Usage (repository root):
    .venv/bin/python bench/collision_fit.py                      # hug + wrestle, 10 cameras, 60 frames
    .venv/bin/python bench/collision_fit.py --variants off,sdf:0.01 --scenarios hug --frames 40
    .venv/bin/python bench/collision_fit.py --quick              # smoke test (tiny capture, 1 epoch), no files
Writes bench/collision_fit.json and the "Collision in the body fit" section of bench/RESULTS.md.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import h4djax  # noqa: E402,F401  (before jax: sets the XLA flag working around the jaxlib CPU fusion bug)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from h4djax.body import SmplParams, load_body_model, smpl_forward_batch  # noqa: E402
from h4djax.collision import GridBuildCounter  # noqa: E402
from h4djax.config import Config  # noqa: E402
from h4djax.eval import metrics as M  # noqa: E402
from h4djax.fit.fit import model_points  # noqa: E402
from h4djax.geometry import to_jax  # noqa: E402
from h4djax.io.capture import read_capture  # noqa: E402
from h4djax.pipeline import fit_stage, pipeline_from_config, refine_stage, triangulate_stage  # noqa: E402

MARK_BEGIN = "<!-- bench/collision_fit.py: begin -->"
MARK_END = "<!-- bench/collision_fit.py: end -->"


def ensure_capture(cache: Path, scenario: str, frames: int, cameras: int, fps: float, seed: int) -> Path:
    """The synthetic capture directory (generated on first use)."""
    from h4djax.synth.config import SynthConfig, override
    from h4djax.synth.generate import generate, write_synth_capture

    d = cache / f"{scenario}_f{frames}_c{cameras}_fps{fps:g}_s{seed}"
    if (d / "gt.npz").exists():
        return d
    cfg = override(override(SynthConfig(seed=seed), "motion", scenario=scenario, num_frames=frames, fps=fps),
                   "rig", num_cameras=cameras)
    t0 = time.perf_counter()
    print(f"generating {d.name} ...", flush=True)
    write_synth_capture(d, generate(cfg, measure_frames=0))
    print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return d


def variant_config(base: Config, name: str) -> Config:
    """`off`; `default` (the config as is); `sdf:TOL[:REFRESH[:EPOCHS[:W]]]` (grid tolerance in metres, grid
    refresh period in iterations, collision in the last EPOCHS epochs only, 0 = all; W: w_collision instead of the
    config's); `spheres[:EPOCHS]`."""
    col, fit = base.collision, base.fit
    if name == "off":
        return dataclasses.replace(base, fit=dataclasses.replace(fit, stages=tuple(
            dataclasses.replace(s, w_collision=0.0) for s in fit.stages)))
    assert any(s.w_collision != 0 for s in fit.stages), "the base config has no collision term"
    if name == "default":
        return base
    kind, *vals = name.split(":")
    if kind == "sdf" and 1 <= len(vals) <= 4:
        vals = vals + ["1", "0"][len(vals) - 1:]
        col = dataclasses.replace(col, method="sdf", grid_tolerance=float(vals[0]), grid_refresh=int(vals[1]))
        fit = dataclasses.replace(fit, collision_epochs=int(vals[2]))
        if len(vals) == 4:  # the collision weight of every stage that has the term (default 1)
            fit = dataclasses.replace(fit, stages=tuple(dataclasses.replace(st, w_collision=float(vals[3]))
                                                        if st.w_collision != 0 else st for st in fit.stages))
    elif kind == "spheres" and len(vals) <= 1:
        col = dataclasses.replace(col, method="spheres")
        fit = dataclasses.replace(fit, collision_epochs=int(vals[0]) if vals else 0)
    else:
        raise SystemExit(f"unknown variant {name!r}")
    return dataclasses.replace(base, collision=col, fit=fit)


def meshes(model, go, bp, betas, tr):
    """Vertices [F, P, V, 3] and COCO-17 regressor keypoints [F, P, 17, 3] of frames-major parameters."""
    p = SmplParams(global_orient=jnp.asarray(go, jnp.float32), body_pose=jnp.asarray(bp, jnp.float32),
                   betas=jnp.broadcast_to(jnp.asarray(betas, jnp.float32)[None], go.shape[:2] + betas.shape[-1:]),
                   transl=jnp.asarray(tr, jnp.float32))
    out = jax.jit(lambda q: smpl_forward_batch(model, q))(p)
    return out.vertices, model_points(model, out, "regressor")


def contact_metrics(va, vb, clusters, stride: int = 2, resolution: int = 24) -> dict:
    """Interpenetration of two people's meshes [F, V, 3] on every frame (exact winding numbers)."""
    ip = jax.jit(lambda a, b: M.interpenetration(a, b, clusters, vertex_stride=stride))(va, vb)
    vol = jax.jit(lambda a, b: M.intersection_volume(a, b, clusters, resolution=resolution))(va, vb)
    dmax, dmean, n = (np.asarray(x, np.float64) for x in (ip.depth_max, ip.depth_mean, ip.inside))
    return {
        "max_depth_mm": round(1000 * float(dmax.max()), 2),
        "mean_frame_max_depth_mm": round(1000 * float(dmax.mean()), 2),
        "mean_depth_mm": round(1000 * float((dmean * n).sum() / max(n.sum(), 1)), 2),
        "penetrating_vertices": int(n.sum()),
        "frames_with_penetration": int((n > 0).sum()),
        "volume_cm3": round(1e6 * float(np.asarray(vol, np.float64).sum()), 1),
        "per_frame_max_depth_mm": [round(1000 * float(x), 1) for x in dmax],
    }


def run_capture(cap_dir: Path, variants: list[str], model, base: Config, epochs: int | None,
                clip: slice = slice(None), progress=None) -> dict:
    from h4djax.synth.generate import body_topology

    cap = read_capture(cap_dir)
    gt = dataclasses.replace(cap.gt, **{k: np.asarray(getattr(cap.gt, k))[clip] for k in (
        "joints3d", "global_orient", "body_pose", "transl")})
    cams = to_jax(cap.cameras, jnp.float32)
    kp = jnp.asarray(np.asarray(cap.keypoints, np.float32)[clip, ..., :17, :])
    if epochs is not None:
        base = dataclasses.replace(base, fit=dataclasses.replace(base.fit, epochs=epochs))
    w0, o0 = pipeline_from_config(variant_config(base, "off"), model)
    tri = jax.block_until_ready(triangulate_stage(cams, kp, w0, o0))
    refined = jax.block_until_ready(refine_stage(tri, w0, o0))
    topo = body_topology(model)
    gv, gk = meshes(model, gt.global_orient, gt.body_pose, gt.betas, gt.transl)
    gt_joints = jnp.asarray(gt.joints3d, jnp.float32)
    out = {"capture": cap_dir.name + ("" if clip == slice(None) else f"[{clip.start}:{clip.stop}]"),
           "frames": int(kp.shape[0]), "cameras": int(kp.shape[1]),
           "gt": contact_metrics(gv[:, 0], gv[:, 1], topo.clusters),
           "refined_mpjpe_mm": round(1000 * float(M.mpjpe(refined.xyz, gt_joints, refined.valid)), 2),
           "variants": {}}
    print(f"{cap_dir.name}: GT interpenetration {out['gt']['max_depth_mm']} mm max, "
          f"{out['gt']['volume_cm3']} cm^3; refined keypoints MPJPE {out['refined_mpjpe_mm']} mm", flush=True)
    for name in variants:
        cfg = variant_config(base, name)
        weights, options = pipeline_from_config(cfg, model)
        counter = None
        if options.collision_fn is not None and getattr(options.collision_fn, "stateful", False):
            counter = GridBuildCounter(options.collision_fn)
            options = dataclasses.replace(options, collision_fn=counter)
        t0 = time.perf_counter()
        compiled = fit_stage.lower(model, refined, weights, options).compile()
        t_compile = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        params, summary = jax.block_until_ready(compiled(model, refined, weights))
        t_run, c_run = time.perf_counter() - t0, time.process_time() - c0
        fv, fk = meshes(model, np.asarray(params.global_orient), np.asarray(params.body_pose),
                        np.asarray(params.betas), np.asarray(params.transl))
        r = {
            "compile_s": round(t_compile, 1), "run_s": round(t_run, 1), "run_cpu_s": round(c_run, 1),
            "mpjpe_mm": round(1000 * float(M.mpjpe(fk, gt_joints)), 2),
            "pve_mm": round(1000 * float(M.pve(fv, gv)), 2),
            "contact": contact_metrics(fv[:, 0], fv[:, 1], topo.clusters),
            "collision_term_last": float(summary.history[-1][-1, -1, -1]),
        }
        if counter is not None:
            # builds per stage-3 iteration; the reference builds every needed grid in every iteration
            b = np.asarray([n for _, n in counter.builds])
            r["grid_builds"] = int(b.sum())
            r["grid_builds_per_iteration"] = round(float(b.mean()), 2)
            r["grid_builds_first_iteration_mean"] = round(float(b[:: cfg.fit.stages[-1].iters].mean()), 1)
            r["grid_builds_reference"] = int(b[:: cfg.fit.stages[-1].iters].sum()) * cfg.fit.stages[-1].iters
        r["load_avg_1min"] = round(os.getloadavg()[0], 2)
        out["variants"][name] = r
        if progress is not None:
            progress(out)
        c = r["contact"]
        if counter is not None:
            print(f"  {name}: {r['grid_builds']} grid builds in {len(counter.builds)} iterations "
                  f"({r['grid_builds_first_iteration_mean']} in a stage's first iteration)", flush=True)
        print(f"  {name:<12} compile {r['compile_s']:6.1f} s  run {r['run_s']:7.1f} s (cpu {r['run_cpu_s']:7.1f} s)  MPJPE {r['mpjpe_mm']:6.2f} mm  "
              f"PVE {r['pve_mm']:6.2f} mm  depth max {c['max_depth_mm']:6.1f} mean-of-max "
              f"{c['mean_frame_max_depth_mm']:5.1f} mean {c['mean_depth_mm']:5.1f} mm  vol {c['volume_cm3']:8.1f} cm^3",
              flush=True)
    off = out["variants"].get("off")
    if off is not None:
        for name, r in out["variants"].items():
            c, c0 = r["contact"], off["contact"]
            r["vs_off"] = {
                "run_time_ratio": round(r["run_s"] / max(off["run_s"], 1e-9), 2),
                "run_cpu_ratio": round(r["run_cpu_s"] / max(off["run_cpu_s"], 1e-9), 2),
                "mpjpe_change_mm": round(r["mpjpe_mm"] - off["mpjpe_mm"], 2),
                "max_depth_ratio": round(c["max_depth_mm"] / max(c0["max_depth_mm"], 1e-9), 3),
                "mean_frame_max_depth_ratio": round(c["mean_frame_max_depth_mm"]
                                                    / max(c0["mean_frame_max_depth_mm"], 1e-9), 3),
                "mean_depth_ratio": round(c["mean_depth_mm"] / max(c0["mean_depth_mm"], 1e-9), 3),
                "volume_ratio": round(c["volume_cm3"] / max(c0["volume_cm3"], 1e-9), 3),
            }
    return out


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [MARK_BEGIN, "## Collision in the body fit (bench/collision_fit.py, issue 7)", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores shared (load average "
             f"{res['machine']['load_before'][0]:.1f} before, {res['machine']['load_after'][0]:.1f} after), no GPU. "
             f"Date {res['date']}. Code: {res.get('git', 'unknown')}. Command: `{res['command']}`.", "",
             *([res["note"], ""] if res.get("note") else []),
             f"Synthetic captures (`h4djax.synth`, seed {a['seed']}): {a['cameras']} cameras, {a['frames']} frames at "
             f"{a['fps']:g} fps, detector noise on; triangulation + refinement once, then the default three-stage fit "
             f"({res['epochs']} epochs, 50/20/120 Adam iterations) per variant. Depths: exact winding numbers, every 2nd "
             "vertex both ways, all frames; volume: 24^3 samples of the boxes' intersection per frame, summed. "
             "Ratios are variant / off in the same run. Fit time = one run of the compiled program in wall seconds "
             "(compile separate; CPU seconds of the run and the load average at its end in bench/collision_fit.json).",
             ""]
    for cap in res["captures"]:
        g = cap["gt"]
        lines += [f"**{cap['capture']}** (refined keypoints MPJPE {cap['refined_mpjpe_mm']} mm; ground truth: max depth "
                  f"{g['max_depth_mm']} mm, mean of per-frame max {g['mean_frame_max_depth_mm']} mm, volume "
                  f"{g['volume_cm3']} cm^3, {g['frames_with_penetration']} frames penetrating)"
                  + (f". {cap['note']}" if cap.get("note") else ""), "",
                  "| variant | run s wall / CPU (compile s) | load | MPJPE mm | dMPJPE mm | PVE mm | max depth mm | mean of max mm "
                  "| mean depth mm | volume cm^3 | depth ratio (max / mean-of-max / mean) | volume ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in cap["variants"].items():
            c, v = r["contact"], r.get("vs_off", {})
            lines.append(f"| {name} | {r['run_s']} / {r.get('run_cpu_s', '-')} ({r['compile_s']}) "
                         f"| {r.get('load_avg_1min', '-')} | {r['mpjpe_mm']} "
                         f"| {v.get('mpjpe_change_mm', '-')} | {r['pve_mm']} | {c['max_depth_mm']} "
                         f"| {c['mean_frame_max_depth_mm']} | {c['mean_depth_mm']} | {c['volume_cm3']} "
                         f"| {v.get('max_depth_ratio', '-')} / {v.get('mean_frame_max_depth_ratio', '-')} / "
                         f"{v.get('mean_depth_ratio', '-')} | {v.get('volume_ratio', '-')} |")
        lines.append("")
    lines.append(MARK_END)
    return "\n".join(lines)


def _git_version() -> str:
    """HEAD commit, '+dirty' when tracked files differ from it (the results then come from uncommitted code)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results_section(section: str, path: Path) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="hug,wrestle", help="comma-separated synth scenarios")
    ap.add_argument("--variants", default="off,default",
                    help="comma-separated: off, default, sdf:TOL[:REFRESH[:EPOCHS[:W]]] (sdf:0:1:0 = reference), "
                         "spheres[:EPOCHS]")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--cameras", type=int, default=10)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=None, help="fit epochs (default: the config's)")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "h4d_colfit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "collision_fit.json")
    ap.add_argument("--clip", default=None, help="START:END frames of the capture to fit (default: all)")
    ap.add_argument("--quick", action="store_true", help="hug, 12 frames at 2 fps, 4 cameras, 1 epoch, 1/20 of the iterations, no files")
    ap.add_argument("--no-results-md", action="store_true")
    ap.add_argument("--compile-cache", type=Path, default=None,
                    help="JAX persistent compilation cache directory (a capture of the same shape reuses the fit's "
                         "executables: its compile_s is then a cache load, not a compilation)")
    ap.add_argument("--merge", default=None,
                    help="comma-separated JSON files of earlier runs (e.g. one scenario per process): write their "
                         "captures as one --out and RESULTS.md section, run nothing")
    a = ap.parse_args(argv)
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge.split(",")]
        res = dict(parts[0])
        res["captures"] = [c for p in parts for c in p["captures"]]
        res["command"] = " ; ".join(p["command"] for p in parts)
        res["machine"] = dict(parts[0]["machine"], load_before=[min(p["machine"]["load_before"][i] for p in parts)
                                                                 for i in range(3)],
                              load_after=[max(p["machine"]["load_after"][i] for p in parts) for i in range(3)])
        res["args"] = dict(parts[0]["args"], scenarios=",".join(p["args"]["scenarios"] for p in parts))
        res["merged_from"] = a.merge.split(",")
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        if not a.no_results_md:
            write_results_section(markdown(res), ROOT / "bench" / "RESULTS.md")
        print(markdown(res))
        return 0
    if a.compile_cache is not None:
        jax.config.update("jax_compilation_cache_dir", str(a.compile_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    base = Config()
    if a.quick:
        # a small capture of its own (12 frames at 2 fps span the approach and the embrace), 4 cameras
        a.clip, a.scenarios, a.frames, a.fps, a.cameras = None, "hug", 12, 2.0, 4
        stages = tuple(dataclasses.replace(s, iters=max(2, s.iters // 20)) for s in base.fit.stages)
        base = dataclasses.replace(base, fit=dataclasses.replace(base.fit, stages=stages))
        a.epochs = 1
    model = load_body_model()
    load_before = os.getloadavg()
    caps = []
    res = {
        "benchmark": "bench/collision_fit.py", "date": datetime.date.today().isoformat(),
        "command": "python bench/collision_fit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "epochs": a.epochs or base.fit.epochs,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_before": list(load_before), "load_after": list(os.getloadavg()),
                    "jax": jax.__version__, "backend": jax.default_backend()},
        "date_run": datetime.datetime.now().isoformat(timespec="seconds"),
        "git": _git_version(),
        "captures": caps,
    }

    def progress(cap):  # partial results after every variant (a long run killed midway keeps what it did)
        res["machine"]["load_after"] = list(os.getloadavg())
        if not a.quick:
            a.out.with_suffix(".partial.json").write_text(json.dumps(dict(res, captures=caps + [cap]), indent=1))

    for scen in a.scenarios.split(","):
        d = ensure_capture(a.cache, scen, a.frames, a.cameras, a.fps, a.seed)
        clip = slice(*(int(x) for x in a.clip.split(":"))) if a.clip else slice(None)
        caps.append(run_capture(d, a.variants.split(","), model, base, a.epochs, clip, progress))
    res["machine"]["load_after"] = list(os.getloadavg())
    print(markdown(res))
    if a.quick:
        return 0
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    if not a.no_results_md:
        write_results_section(markdown(res), ROOT / "bench" / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
