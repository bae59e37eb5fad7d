"""Inter-person collision loss (PIPELINE.md step 6): per-person SDF grids (Jiang et al., CVPR 2020) built jitted
and batched, trilinear penalty on the other people's vertices, and a faster inscribed-sphere proxy.

Entry points: `collision_loss(verts[P, V, 3], mesh, settings)` for one frame, `collision_loss_frames` for a
sequence, `build_sdf_grid` for one person's grid, `CollisionSettings.from_config(CollisionConfig)`.
"""

from h4djax.collision.geometry import point_triangle_sqdist, solid_angle, unsigned_distance_brute, winding_numbers
from h4djax.collision.grid import (
    SdfGrid,
    build_sdf_grid,
    build_sdf_grid_brute,
    grid_frame,
    grid_points,
    inside_ray_parity,
    sample_sdf,
)
from h4djax.collision.loss import (
    CollisionMesh,
    CollisionSettings,
    CollisionTerm,
    GridBuildCounter,
    GridCache,
    build_grids,
    collision_loss,
    collision_loss_cached,
    collision_loss_frames,
    init_grid_cache,
    make_collision_fn,
    pair_depths,
    pair_penetration,
    point_depth_exact,
    refresh_grids,
)
from h4djax.collision.spheres import SphereProxy, fit_sphere_proxy, pose_spheres, sphere_depth

__all__ = [
    "CollisionMesh",
    "CollisionSettings",
    "CollisionTerm",
    "GridBuildCounter",
    "GridCache",
    "SdfGrid",
    "SphereProxy",
    "build_grids",
    "build_sdf_grid",
    "build_sdf_grid_brute",
    "collision_loss",
    "collision_loss_cached",
    "collision_loss_frames",
    "fit_sphere_proxy",
    "grid_frame",
    "grid_points",
    "init_grid_cache",
    "inside_ray_parity",
    "make_collision_fn",
    "pair_depths",
    "pair_penetration",
    "point_depth_exact",
    "point_triangle_sqdist",
    "pose_spheres",
    "refresh_grids",
    "sample_sdf",
    "solid_angle",
    "sphere_depth",
    "unsigned_distance_brute",
    "winding_numbers",
]
