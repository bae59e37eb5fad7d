"""Speed benchmark of the body model (issue 3): person-frames per second, JAX paths vs smplx (PyTorch, CPU).

Batch: people x frames (default 2 x 600 = 1,200 person-frames) of random poses (N(0, 0.4) rad per axis) and shapes
(N(0, 1)) on the same model file for every column (default: the embedded `models/anny_smpl.npz`).

Columns (each: forward, and forward + backward = gradient of a scalar loss w.r.t. all SMPL parameters):
- `jax_full`: `smpl_forward_batch`, the full 13,718-vertex mesh (+ joints, keypoints); loss = sum of squares of all.
- `jax_joints`: `smpl_joints_batch`, forward kinematics on the regressed rest joints, no skinning.
- `jax_joints_kpts`: `smpl_joints_keypoints_batch`, joints + the 23 model keypoints through the folded regressor.
- `smplx`: `smplx.SMPL` (torch CPU, float32, same arrays via a data_struct adapter), full mesh + joints; loss as
  jax_full without keypoints (smplx has no keypoint regressor). Skipped with a note if torch/smplx are missing
  (`pip install -e '.[parity]'`).

JAX compile time is measured separately (`jit(...).lower(...).compile()`); steady state is the median of `--reps`
calls with `block_until_ready`. torch gets `torch.set_num_threads(os.cpu_count())`, like XLA's CPU backend.

Usage (repository root):
    .venv/bin/python bench/body.py                 # 2 x 600, writes bench/body.json and the body section of RESULTS.md
    .venv/bin/python bench/body.py --quick         # 2 x 50 smoke test, touches nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from h4djax.body import (  # noqa: E402
    SmplParams,
    load_body_model,
    smpl_forward_batch,
    smpl_joints_batch,
    smpl_joints_keypoints_batch,
)
from h4djax.body.loaders import default_body_model_path  # noqa: E402

MARK_BEGIN = "<!-- bench/body.py: begin -->"
MARK_END = "<!-- bench/body.py: end -->"


def _median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), [float(t) for t in ts]


def _losses(model):
    def full(p):
        o = smpl_forward_batch(model, p)
        return jnp.sum(o.vertices**2) + jnp.sum(o.joints**2) + jnp.sum(o.keypoints**2)

    def joints(p):
        return jnp.sum(smpl_joints_batch(model, p) ** 2)

    def joints_kpts(p):
        o = smpl_joints_keypoints_batch(model, p)
        return jnp.sum(o.joints**2) + jnp.sum(o.keypoints**2)

    fwd = {
        "jax_full": lambda p: smpl_forward_batch(model, p),
        "jax_joints": lambda p: smpl_joints_batch(model, p),
        "jax_joints_kpts": lambda p: smpl_joints_keypoints_batch(model, p),
    }
    loss = {"jax_full": full, "jax_joints": joints, "jax_joints_kpts": joints_kpts}
    return fwd, loss


def bench_jax(model, params, reps):
    fwd, loss = _losses(model)
    out = {}
    for name in fwd:
        for mode, fn in (("fwd", fwd[name]), ("fwd_bwd", jax.value_and_grad(loss[name]))):
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(params).compile()
            t_compile = time.perf_counter() - t0
            jax.block_until_ready(compiled(params))  # warm-up
            r = reps if name != "jax_full" else max(3, reps // 4)
            t, ts = _median_time(lambda: jax.block_until_ready(compiled(params)), r)
            out[f"{name}/{mode}"] = {"compile_s": t_compile, "median_s": t, "times_s": ts}
            print(f"{name:16s} {mode:8s} compile {t_compile:7.2f} s   steady {t * 1e3:9.2f} ms", flush=True)
    return out


def bench_smplx(path, params_np, reps):
    try:
        import smplx
        import torch
    except ImportError as e:
        return None, f"smplx column skipped: {e} (install the optional extra: pip install -e '.[parity]')"
    torch.set_num_threads(os.cpu_count() or 1)
    z = dict(np.load(path, allow_pickle=False))
    struct = smplx.utils.Struct(**{k: z[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                                      "kintree_table", "f")})
    n = params_np["betas"].shape[0]
    model = smplx.SMPL(model_path=str(path), data_struct=struct, num_betas=10, dtype=torch.float32, batch_size=n)
    t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in params_np.items()}

    def fwd():
        with torch.no_grad():
            return model(global_orient=t["global_orient"], body_pose=t["body_pose"], betas=t["betas"],
                         transl=t["transl"])

    def fwd_bwd():
        p = {k: v.clone().requires_grad_(True) for k, v in t.items()}
        o = model(**p)
        loss = (o.vertices**2).sum() + (o.joints**2).sum()
        loss.backward()
        return loss

    out = {}
    for mode, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        med, ts = _median_time(fn, max(3, reps // 4))
        out[f"smplx/{mode}"] = {"first_call_s": first, "median_s": med, "times_s": ts}
        print(f"{'smplx':16s} {mode:8s} first   {first:7.2f} s   steady {med * 1e3:9.2f} ms", flush=True)
    from importlib.metadata import version

    return out, f"smplx {version('smplx')}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def write_results_section(section: str, path: Path):
    """Replace this benchmark's section of the shared RESULTS.md (between its markers) or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body-model", default=None, help="model file (default: embedded models/anny_smpl.npz)")
    ap.add_argument("--people", type=int, default=2)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="2 x 50, few reps, no files written")
    a = ap.parse_args(argv)
    if a.quick:
        a.frames, a.reps = 50, 4
    path = Path(a.body_model) if a.body_model else default_body_model_path()
    model = load_body_model(path)
    n = a.people * a.frames
    rng = np.random.default_rng(0)
    params_np = {
        "global_orient": rng.normal(scale=0.4, size=(n, 3)),
        "body_pose": rng.normal(scale=0.4, size=(n, 69)),
        "betas": rng.normal(size=(n, 10)),
        "transl": rng.normal(size=(n, 3)),
    }
    # people x frames layout for JAX, with one shape per person (the fit's layout)
    params = SmplParams(
        global_orient=jnp.asarray(params_np["global_orient"].reshape(a.people, a.frames, 3), jnp.float32),
        body_pose=jnp.asarray(params_np["body_pose"].reshape(a.people, a.frames, 69), jnp.float32),
        betas=jnp.asarray(params_np["betas"].reshape(a.people, a.frames, 10)[:, 0], jnp.float32),
        transl=jnp.asarray(params_np["transl"].reshape(a.people, a.frames, 3), jnp.float32),
    )
    params_np["betas"] = np.repeat(params_np["betas"].reshape(a.people, a.frames, 10)[:, :1], a.frames, 1).reshape(
        n, 10)

    load_before = os.getloadavg()
    print(f"model {path.name}: {model.num_verts} verts; batch {a.people} x {a.frames} = {n} person-frames", flush=True)
    res = bench_jax(model, params, a.reps)
    ref, ref_note = bench_smplx(path, params_np, a.reps)
    if ref is not None:
        res.update(ref)
    else:
        print(ref_note)

    load_after = os.getloadavg()
    pfs = {k: n / v["median_s"] for k, v in res.items()}
    ratios = {
        "joints_vs_full_fwd_bwd": res["jax_full/fwd_bwd"]["median_s"] / res["jax_joints/fwd_bwd"]["median_s"],
        "joints_kpts_vs_full_fwd_bwd": res["jax_full/fwd_bwd"]["median_s"]
        / res["jax_joints_kpts/fwd_bwd"]["median_s"],
        "joints_vs_full_fwd": res["jax_full/fwd"]["median_s"] / res["jax_joints/fwd"]["median_s"],
    }
    if ref is not None:
        ratios["jax_full_vs_smplx_fwd"] = res["smplx/fwd"]["median_s"] / res["jax_full/fwd"]["median_s"]
        ratios["jax_full_vs_smplx_fwd_bwd"] = res["smplx/fwd_bwd"]["median_s"] / res["jax_full/fwd_bwd"]["median_s"]
        ratios["jax_joints_kpts_vs_smplx_fwd_bwd"] = (res["smplx/fwd_bwd"]["median_s"]
                                                     / res["jax_joints_kpts/fwd_bwd"]["median_s"])
    for k, v in ratios.items():
        print(f"ratio {k}: {v:.1f}x")

    date = datetime.date.today().isoformat()
    cmd = "    .venv/bin/python bench/body.py" + ("" if not a.body_model else f" --body-model {a.body_model}")
    machine = f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}; jax {jax.__version__}"
    summary = {
        "date": date,
        "machine": machine,
        "model": path.name,
        "person_frames": n,
        "batch": [a.people, a.frames],
        "results": res,
        "person_frames_per_s": pfs,
        "ratios": ratios,
        "reference": ref_note,
        "loadavg_1min_before_after": [load_before[0], load_after[0]],
    }
    if a.quick:
        return summary
    (ROOT / "bench" / "body.json").write_text(json.dumps(summary, indent=2))

    def row(key, label):
        r = res.get(key)
        if r is None:
            return f"| {label} | skipped | | |"
        comp = f"{r['compile_s']:.2f}" if "compile_s" in r else "-"
        return f"| {label} | {r['median_s'] * 1e3:.1f} | {pfs[key]:,.0f} | {comp} |"

    lines = [
        MARK_BEGIN,
        "## Body model forward / backward (bench/body.py, issue 3)",
        "",
        f"Machine: {machine}. Date: {date}. Model: `{path.name}` ({model.num_verts} vertices, float32). Batch: "
        f"{a.people} people x {a.frames} frames = {n} person-frames, random poses and shapes. Command:",
        "",
        cmd,
        "",
        "Steady state = median of repeated calls (block_until_ready); JAX compile time measured separately. "
        "fwd+bwd = value and gradient of a scalar loss w.r.t. all SMPL parameters. The machine is shared with "
        f"other jobs (1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after this run, on 2 "
        "cores), so absolute times are noisy and pessimistic; ratios come from the same run.",
        "",
        "| path | median ms | person-frames / s | compile s |",
        "|---|---|---|---|",
        row("jax_full/fwd", "JAX full mesh, forward"),
        row("jax_full/fwd_bwd", "JAX full mesh, forward + backward"),
        row("jax_joints/fwd", "JAX joints only, forward"),
        row("jax_joints/fwd_bwd", "JAX joints only, forward + backward"),
        row("jax_joints_kpts/fwd", "JAX joints + 23 keypoints (folded regressor), forward"),
        row("jax_joints_kpts/fwd_bwd", "JAX joints + 23 keypoints, forward + backward"),
        row("smplx/fwd", "smplx (torch CPU, float32), forward"),
        row("smplx/fwd_bwd", "smplx (torch CPU, float32), forward + backward"),
        "",
        "Ratios (same run; higher = first one faster):",
        "",
    ]
    lines += [f"- {k}: {v:.1f}x" for k, v in ratios.items()]
    if ref is None:
        lines += ["", f"Note: {ref_note}"]
    else:
        lines += ["", f"Reference: {ref_note}."]
    lines += [
        "",
        "Targets (issue 3): joints-only forward + backward >= 20x faster than full-mesh JAX; full-mesh JAX at least "
        "as fast as smplx.",
        MARK_END,
    ]
    write_results_section("\n".join(lines), ROOT / "bench" / "RESULTS.md")
    return summary


if __name__ == "__main__":
    main()
