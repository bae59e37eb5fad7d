"""Identity for 2D detections: cross-view association per frame and tracking over time (host: numpy + scipy;
triangulation and the 2D filter through h4djax.triangulate).

Public API:
- ``associate_sequence(cams, keypoints, cfg, fps=...) -> Association`` (unassociated detections f[frames, cams, dets,
  kpts, 3] -> ``Association.keypoints`` f32[frames, cams, people, kpts, 3] with consistent identities);
- ``associate_frames`` (per-frame clustering -> ``FrameClusters``), ``finish_association``, ``make_tracker``;
- geometry: ``pairwise_ray_costs`` (ray-to-ray distances, metres) -> ``RayCosts``, ``ray_directions``,
  ``undistort_normalized``, ``triangulate_np``, ``oks_np``, ``flip_lr``;
- clustering: ``greedy_clusters``, ``orient_clusters``, ``assign_to_people``;
- tracking: ``Tracker``, ``Track``, ``select_tracks``, ``pose_distance``, ``swap_people``.
Settings are the association fields of ``h4djax.config.DetectConfig``.
"""

from h4djax.associate.associate import (
    Association, FrameClusters, associate_frames, associate_sequence, finish_association, gather_people,
    make_tracker, swap_people, triangulate_people,
)
from h4djax.associate.cluster import assign_to_people, greedy_clusters, orient_clusters
from h4djax.associate.geometry import (
    RayCosts, flip_lr, oks_np, pairwise_ray_costs, ray_directions, triangulate_np, undistort_normalized,
)
from h4djax.associate.track import Track, Tracker, pose_distance, select_tracks

__all__ = [
    "Association", "FrameClusters", "RayCosts", "Track", "Tracker", "assign_to_people", "associate_frames",
    "associate_sequence", "finish_association", "flip_lr", "gather_people", "greedy_clusters", "make_tracker",
    "oks_np", "orient_clusters", "pairwise_ray_costs", "pose_distance", "ray_directions", "select_tracks",
    "swap_people", "triangulate_np", "triangulate_people", "undistort_normalized",
]
