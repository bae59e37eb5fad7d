"""Render the default body model (rest pose and a posed configuration, front and side) with matplotlib.

    .venv/bin/python docs/body_renders/render_body.py [--body-model PATH] [--out docs/body_renders]

Orthographic flat-shaded mesh (painter's algorithm with back-face culling), SMPL joints (red, with bones) and the
model's COCO-17 + foot keypoints (blue) drawn on top. SMPL axes: y up, z forward, x = subject's left; the front view
looks along -z (subject's left on the image right), the side view looks along -x from the subject's left.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from h4djax.body import SmplParams, load_body_model, smpl_forward  # noqa: E402


def posed_params() -> SmplParams:
    """A walking-and-waving pose (axis-angle per SMPL joint, radians)."""
    pose = np.zeros((24, 3))
    pose[1] = [-0.7, 0.0, 0.05]  # left hip: thigh forward
    pose[4] = [1.0, 0.0, 0.0]  # left knee: bent
    pose[2] = [0.35, 0.0, -0.05]  # right hip: thigh back
    pose[5] = [0.3, 0.0, 0.0]  # right knee
    pose[7] = [-0.2, 0.0, 0.0]  # left ankle
    pose[16] = [0.0, 0.0, -1.2]  # left shoulder: arm down
    pose[18] = [0.0, -1.1, 0.0]  # left elbow: forearm forward
    pose[17] = [0.0, 0.0, -0.8]  # right shoulder: arm raised
    pose[19] = [0.0, 0.0, -0.9]  # right elbow: forearm up (wave)
    pose[15] = [0.1, 0.35, 0.0]  # head turned
    pose[3] = [0.1, 0.0, 0.0]  # spine bend
    return SmplParams(global_orient=jnp.asarray(pose[0], jnp.float32),
                      body_pose=jnp.asarray(pose[1:].reshape(-1), jnp.float32),
                      betas=jnp.zeros(10, jnp.float32), transl=jnp.zeros(3, jnp.float32))


def draw(ax, verts, faces, joints, kpts, parents, view: str, title: str):
    if view == "front":
        P = np.array([[1.0, 0, 0], [0, 1.0, 0]])  # image (right, up) = (x, y); depth toward viewer = +z
        d = np.array([0, 0, 1.0])
    else:
        P = np.array([[0, 0, -1.0], [0, 1.0, 0]])  # seen from the subject's left: image right = -z
        d = np.array([1.0, 0, 0])
    tri = verts[faces]  # [F,3,3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    facing = n @ d
    keep = facing > 0  # back-face culling (faces are counter-clockwise seen from outside)
    depth = (tri[keep] @ d).mean(axis=1)
    order = np.argsort(depth)  # far to near
    tri2d = (tri[keep] @ P.T)[order]
    shade = 0.25 + 0.75 * facing[keep][order]
    colors = np.clip(shade[:, None] * np.array([0.85, 0.72, 0.62])[None], 0, 1)
    ax.add_collection(PolyCollection(tri2d, facecolors=colors, edgecolors="none", antialiased=False))
    j2, k2 = joints @ P.T, kpts @ P.T
    for c, p in enumerate(parents):
        if p >= 0:
            ax.plot(*np.stack([j2[p], j2[c]]).T, color="darkred", lw=1.2, alpha=0.9)
    ax.scatter(*j2.T, s=14, c="red", zorder=3, label="SMPL joints (24)")
    ax.scatter(*k2.T, s=14, c="royalblue", marker="s", zorder=4, label="COCO-17 + feet keypoints")
    all2 = verts @ P.T
    lo, hi = all2.min(0), all2.max(0)
    c, r = (lo + hi) / 2, (hi - lo).max() / 2 * 1.08
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--body-model", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent))
    a = ap.parse_args(argv)
    model = load_body_model(a.body_model)
    faces = np.asarray(model.faces)
    for name, label, params in (("rest", "rest (T) pose", SmplParams.zeros()),
                                ("posed", "walk + wave pose", posed_params())):
        out = smpl_forward(model, params)
        v, j, k = (np.asarray(x, np.float64) for x in (out.vertices, out.joints, out.keypoints))
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.6), dpi=110)
        for ax, view in zip(axes, ("front", "side")):
            draw(ax, v, faces, j, k, model.parents, view, f"{Path(model.name).name}: {label}, {view}")
        axes[0].legend(loc="lower left", fontsize=7)
        fig.tight_layout()
        path = Path(a.out) / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main()
