"""Host-side (numpy) readers and writers: calibrations, capture directories, OpenPose JSON."""

from h4djax.io.calibration import read_cameras
from h4djax.io.cameras_toml import read_cameras_toml, write_cameras_toml
from h4djax.io.colmap import read_colmap, read_harmony4d, write_colmap_text
from h4djax.io.pose2sim import read_pose2sim_toml, read_qualisys_qca

__all__ = [
    "read_cameras",
    "read_cameras_toml",
    "read_colmap",
    "read_harmony4d",
    "read_pose2sim_toml",
    "read_qualisys_qca",
    "write_cameras_toml",
    "write_colmap_text",
]
