"""2D filtering + robust multi-view triangulation (PIPELINE.md 1.2-1.3), pure JAX, batched and differentiable.

- ``filter``: minimum-keypoint and OKS duplicate filters per view (EgoHumans ``refine_poses``).
- ``dlt``: weighted DLT on the undistorted normalized plane via a batched 4x4 Jacobi eigensolver.
- ``robust``: exhaustive pairwise hypotheses -> largest inlier set -> weighted DLT -> Gauss-Newton, over
  frames x people x joints x view pairs in one jitted program with frame chunking.
"""

from h4djax.triangulate.filter import (
    COCO_SIGMAS,
    FilterParams,
    Filtered2D,
    filter_keypoints,
    filter_view,
    filter_with_config,
    oks_matrix,
)
from h4djax.triangulate.robust import (
    Triangulation,
    TriangulationParams,
    to_joints3d,
    triangulate,
    triangulate_normalized,
    triangulate_tracks,
    triangulate_with_config,
    view_pairs,
)

__all__ = [
    "COCO_SIGMAS",
    "FilterParams",
    "Filtered2D",
    "Triangulation",
    "TriangulationParams",
    "filter_keypoints",
    "filter_view",
    "filter_with_config",
    "oks_matrix",
    "to_joints3d",
    "triangulate",
    "triangulate_normalized",
    "triangulate_tracks",
    "triangulate_with_config",
    "view_pairs",
]
