"""`h4d calib`: inspect and convert calibrations.

    h4d calib show FILE [--png PATH] [--up auto|x|y|z|-x|-y|-z]
        Table of the cameras (name, model, size, fx, fy, cx, cy, distance to the rig centre) and a top view of the
        rig (camera positions, viewing directions, names) written as a PNG.
    h4d calib convert FILE OUT.toml
        Any readable calibration (see `h4djax.io.read_cameras`) -> FORMATS.md cameras.toml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from h4djax.geometry.cameras import Cameras
from h4djax.geometry.cameras_np import camera_centers_np
from h4djax.io import read_cameras, write_cameras_toml

_AXES = {"x": [1.0, 0, 0], "y": [0, 1.0, 0], "z": [0, 0, 1.0]}


def register(subparsers) -> None:
    p = subparsers.add_parser("calib", help="inspect or convert a camera calibration")
    sub = p.add_subparsers(dest="calib_command", metavar="ACTION")
    show = sub.add_parser("show", help="print a camera table and draw a top view of the rig")
    show.add_argument("file", type=Path, help="calibration file or folder (any format h4d reads)")
    show.add_argument("--png", type=Path, default=None,
                      help="where to write the top view (default: ./<name>_rig.png in the current directory)")
    show.add_argument("--up", default="auto", choices=["auto", "x", "y", "z", "-x", "-y", "-z"],
                      help="world up axis for the top view (auto: normal of the plane of the camera centres)")
    show.set_defaults(func=_show)
    conv = sub.add_parser("convert", help="write any readable calibration as a FORMATS.md cameras.toml")
    conv.add_argument("file", type=Path)
    conv.add_argument("out", type=Path)
    conv.set_defaults(func=_convert)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def world_up(cams: Cameras, up: str = "auto") -> np.ndarray:
    """Unit world up vector: a named axis, or the normal of the best-fit plane through the camera centres, signed
    so that the cameras look down on average (rigs are mounted above the subjects) or, if they look level, so
    that it points along the world axis it is closest to."""
    if up != "auto":
        sign = -1.0 if up.startswith("-") else 1.0
        return sign * np.asarray(_AXES[up[-1]])
    centers = camera_centers_np(cams)
    if len(centers) >= 3:
        _, s, vt = np.linalg.svd(centers - centers.mean(0))
        normal = vt[2]
        if s[1] < 1e-9:  # collinear centres: no plane; fall back to the mean camera "up" (-y axis)
            normal = -np.asarray(cams.R)[:, 1, :].mean(0)
    else:
        normal = -np.asarray(cams.R)[:, 1, :].mean(0)
    normal = normal / max(np.linalg.norm(normal), 1e-12)
    look = np.asarray(cams.R)[:, 2, :].mean(0)  # mean viewing direction (camera +z in world)
    tilt = float(look @ normal)
    if abs(tilt) > 0.05:
        return normal if tilt < 0 else -normal
    return normal if normal[np.argmax(np.abs(normal))] > 0 else -normal


def camera_table(cams: Cameras) -> str:
    """Fixed-width table: name, model, size, fx, fy, cx, cy, distance (m) to the rig centre."""
    centers = camera_centers_np(cams)
    rig = centers.mean(0)
    K, size, fe = np.asarray(cams.K), np.asarray(cams.size), np.asarray(cams.fisheye)
    width = max([4] + [len(n) for n in cams.names])
    head = f"{'name':<{width}}  {'model':<7}  {'size':>11}  {'fx':>9}  {'fy':>9}  {'cx':>8}  {'cy':>8}  {'dist(m)':>7}"
    rows = [head, "-" * len(head)]
    for i, name in enumerate(cams.names):
        rows.append(
            f"{name:<{width}}  {'fisheye' if fe[i] else 'opencv':<7}  {f'{size[i, 0]}x{size[i, 1]}':>11}  "
            f"{K[i, 0, 0]:9.2f}  {K[i, 1, 1]:9.2f}  {K[i, 0, 2]:8.2f}  {K[i, 1, 2]:8.2f}  "
            f"{np.linalg.norm(centers[i] - rig):7.3f}"
        )
    return "\n".join(rows)


def plot_rig_top_view(cams: Cameras, path: Path, up: np.ndarray, title: str = "") -> None:
    """Top view (looking down `up`) of camera centres, viewing directions and names, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers = camera_centers_np(cams)
    look = np.asarray(cams.R)[:, 2, :]
    # In-plane basis: the world axis after the one closest to up (z up -> x right, y up the page), made orthogonal
    # to up, then e2 = up x e1 (right-handed, so the plot is a view from above, not a mirror image).
    axis = np.eye(3)[(int(np.argmax(np.abs(up))) + 1) % 3]
    e1 = axis - (axis @ up) * up
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    p = np.stack([centers @ e1, centers @ e2], -1)
    d = np.stack([look @ e1, look @ e2], -1)
    rig = p.mean(0)
    radius = max(float(np.linalg.norm(p - rig, axis=1).max()), 1e-3)
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    ax.scatter(p[:, 0], p[:, 1], s=40, c="tab:blue", zorder=3, label="camera centre")
    ax.quiver(p[:, 0], p[:, 1], d[:, 0] * 0.35 * radius, d[:, 1] * 0.35 * radius, angles="xy", scale_units="xy",
              scale=1, color="tab:orange", width=0.004, zorder=2, label="viewing direction")
    for (x, y), name in zip(p, cams.names):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.scatter([rig[0]], [rig[1]], marker="+", s=120, c="k", label="rig centre")
    ax.scatter([0], [0], marker="x", s=60, c="tab:red", label="world origin")
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    names = "xyz"
    ax.set_xlabel(f"m along world {_axis_name(e1, names)}")
    ax.set_ylabel(f"m along world {_axis_name(e2, names)}")
    ax.set_title(title or "camera rig, top view")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _axis_name(v: np.ndarray, names: str) -> str:
    i = int(np.argmax(np.abs(v)))
    if abs(v[i]) > 0.999:
        return ("-" if v[i] < 0 else "+") + names[i]
    return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"


def _show(args: argparse.Namespace) -> int:
    cams = read_cameras(args.file)
    up = world_up(cams, args.up)
    print(f"{args.file}: {cams.num_cams} cameras; rig centre "
          f"{np.array2string(camera_centers_np(cams).mean(0), precision=3)} m; up {np.array2string(up, precision=3)}")
    print(camera_table(cams))
    png = args.png if args.png is not None else Path.cwd() / f"{args.file.name.split('.')[0] or 'calib'}_rig.png"
    plot_rig_top_view(cams, png, up, title=f"{args.file.name}: {cams.num_cams} cameras, top view")
    print(f"top view written to {png}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    cams = read_cameras(args.file)
    write_cameras_toml(cams, args.out)
    print(f"{args.file} -> {args.out} ({cams.num_cams} cameras)")
    return 0
