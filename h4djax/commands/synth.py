"""`h4d synth OUT`: a seeded, deterministic synthetic close-interaction capture with ground truth.

    h4d synth OUT [--cameras 20] [--frames 600] [--scenario hug] [--seed 0] [--preset configs/synth_hard.toml]

Writes the FORMATS.md capture directory (cameras.toml, keypoints2d.npz, gt.npz) plus synth.npz (clean projections,
noise labels) and synth.json (config and measured statistics). Same seed and settings -> the same bytes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    from h4djax.synth.scenarios import SCENARIOS

    p = subparsers.add_parser("synth", help="generate a synthetic multi-view capture with ground truth",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="capture directory to write")
    p.add_argument("--cameras", type=int, default=None, help="number of cameras, 2..64 (default 20)")
    p.add_argument("--frames", type=int, default=None, help="number of frames (default 600)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default=None, help="interaction (default hug)")
    p.add_argument("--seed", type=int, default=None, help="master seed (default 0)")
    p.add_argument("--preset", type=Path, default=None, help="SynthConfig TOML preset (e.g. configs/synth_hard.toml)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def make_config(preset=None, cameras=None, frames=None, scenario=None, seed=None):
    """SynthConfig from a preset plus command-line overrides (None = keep)."""
    import dataclasses

    from h4djax.errors import ConfigError
    from h4djax.synth.config import load_synth_config, override

    cfg = load_synth_config(preset)
    if cameras is not None and not (2 <= cameras <= 64):
        raise ConfigError(f"--cameras: expected 2..64, got {cameras}")
    cfg = override(cfg, "rig", num_cameras=cameras)
    cfg = override(cfg, "motion", num_frames=frames, scenario=scenario)
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    return cfg


def run(args) -> int:
    from h4djax.body import load_body_model
    from h4djax.synth.generate import generate, write_synth_capture

    cfg = make_config(args.preset, args.cameras, args.frames, args.scenario, args.seed)
    sc = generate(cfg, load_body_model(None), progress=not args.quiet)
    write_synth_capture(args.out, sc)
    print(f"h4d synth: {cfg.motion.scenario}, {cfg.rig.num_cameras} cameras, {cfg.motion.num_frames} frames, "
          f"seed {cfg.seed} -> {args.out}")
    if not args.quiet:
        print(json.dumps({k: sc.stats[k] for k in ("interpenetration", "contact", "noise_labels", "timings_s")
                          if k in sc.stats}, indent=1))
    return 0
