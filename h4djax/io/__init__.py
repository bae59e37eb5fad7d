"""Host-side (numpy) readers and writers: calibrations, capture directories, OpenPose JSON."""

from h4djax.io.calibration import read_cameras
from h4djax.io.capture import Capture, GroundTruth, read_capture, write_capture
from h4djax.io.cameras_toml import read_cameras_toml, write_cameras_toml
from h4djax.io.colmap import read_colmap, read_harmony4d, write_colmap_text
from h4djax.io.openpose import OpenPoseDetections, body25b_to_coco17, read_openpose
from h4djax.io.pose2sim import read_pose2sim_toml, read_qualisys_qca

__all__ = [
    "Capture",
    "GroundTruth",
    "read_capture",
    "write_capture",
    "OpenPoseDetections",
    "body25b_to_coco17",
    "read_openpose",
    "read_cameras",
    "read_cameras_toml",
    "read_colmap",
    "read_harmony4d",
    "read_pose2sim_toml",
    "read_qualisys_qca",
    "write_cameras_toml",
    "write_colmap_text",
]
