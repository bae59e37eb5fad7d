"""The collision term inside the body fit (issue 7): the stateful SDF grid cache gives the reference fit at
tolerance 0, stays close to it at a small tolerance, works under fit_batch's vmap, and collision on separates two
interpenetrating bodies that collision off leaves inside each other.

Body: the toy humanoid's 24 joints, each carrying a closed octahedron (so the mesh is a union of closed, outward
oriented components, which the SDF grid builder handles), two people facing each other 0.2 m apart in T-pose, so
their arms and torsos overlap; targets are their exact COCO points."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from h4djax.body.keypoints import coco_fit_index
from h4djax.body.lbs import smpl_forward_batch, smpl_joints_keypoints_batch
from h4djax.body.model import SMPL_PARENTS, SmplParams, make_body_model
from h4djax.collision import CollisionSettings, GridBuildCounter, collision_loss_frames, make_collision_fn
from h4djax.config import FitConfig, StageConfig
from h4djax.fit.fit import _fit_batch, fit_sequence, model_points, stages_from_config
from toy_body import FACE, toy_joints

RADIUS = 0.07


def octahedron_body():
    """SMPL-layout model: an octahedron of radius RADIUS around each joint (vertices rigidly skinned to it), the
    toy face points as keypoint-only vertices."""
    J = toy_joints()
    unit = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    faces1 = []
    for sx in (0, 1):
        for sy in (2, 3):
            for sz in (4, 5):
                tri = [sx, sy, sz]
                # (+x, +y, +z) is counter-clockwise from outside; each sign flip mirrors the orientation
                if (sx == 1) ^ (sy == 3) ^ (sz == 5):
                    tri = tri[::-1]
                faces1.append(tri)
    faces1 = np.asarray(faces1)
    verts = (J[:, None] + RADIUS * unit[None]).reshape(-1, 3)
    faces = (faces1[None] + 6 * np.arange(24)[:, None, None]).reshape(-1, 3)
    face = np.asarray(list(FACE.values()))
    verts = np.concatenate([verts, face])
    owner = np.concatenate([np.repeat(np.arange(24), 6), np.full(len(face), 15)])
    V = len(verts)
    weights = np.zeros((V, 24))
    weights[np.arange(V), owner] = 1.0
    J_reg = np.zeros((24, V))
    J_reg[owner[:144], np.arange(144)] = 1.0 / 6
    shapedirs = np.random.default_rng(0).normal(scale=0.003, size=(V, 3, 10))
    kreg = np.zeros((len(face), V))
    kreg[np.arange(len(face)), 144 + np.arange(len(face))] = 1.0
    names = tuple(FACE)
    return make_body_model(v_template=verts, shapedirs=shapedirs, posedirs=None, J_regressor=J_reg, weights=weights,
                           faces=faces, parents=SMPL_PARENTS, kpt_regressor=kreg, kpt_names=names,
                           coco_fit_index=coco_fit_index(names), dtype=np.float32, name="octa")


def _signed_volume(v, f):
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return np.sum(np.einsum("ij,ij->i", a, np.cross(b, c))) / 6.0


@pytest.fixture(scope="module")
def setup():
    model = octahedron_body()
    F, P = 4, 2
    t = np.linspace(0, 1, F)
    go = np.zeros((P, F, 3))
    go[1, :, 1] = np.pi  # B faces A
    bp = np.zeros((P, F, 69))
    bp[:, :, 17 * 3 + 1] = 0.2 * t  # a little elbow motion so frames differ
    tr = np.zeros((P, F, 3))
    tr[:, :, 1] = 0.9
    tr[1, :, 2] = 0.2 - 0.05 * t  # 0.2 -> 0.15 m apart: arms and torsos overlap
    gt = SmplParams(global_orient=jnp.asarray(go, jnp.float32), body_pose=jnp.asarray(bp, jnp.float32),
                    betas=jnp.zeros((P, 10), jnp.float32), transl=jnp.asarray(tr, jnp.float32))
    kp = jnp.swapaxes(model_points(model, smpl_joints_keypoints_batch(model, gt), "paper"), 0, 1)
    # one pose stage with collision (the default stage 3's weights), few iterations: the cache logic is per stage
    cfg = FitConfig(epochs=1, correspondence="paper", stages=(
        StageConfig(name="pose", free=("global_orient", "transl", "body_pose"), iters=9, learning_rate=0.02,
                    w_joint=10.0, w_reg=0.001, w_temporal=1.0, w_collision=1.0),))
    return model, gt, kp, cfg


def _penetration(model, params):
    """The reference collision loss (fresh grids) of frames-major fitted params, summed over frames."""
    pm = SmplParams(global_orient=jnp.swapaxes(params.global_orient, 0, 1),
                    body_pose=jnp.swapaxes(params.body_pose, 0, 1), betas=params.betas,
                    transl=jnp.swapaxes(params.transl, 0, 1))
    verts = jnp.swapaxes(smpl_forward_batch(model, pm).vertices, 0, 1)
    return float(jnp.sum(collision_loss_frames(verts, model.faces, CollisionSettings())))


class _Stateless:
    """The same term without its `stateful` interface: the fit then calls it directly in every iteration."""

    def __init__(self, term):
        self.term = term

    def __call__(self, verts, frame_mask):
        return self.term(verts, frame_mask)


# LLVM -O0 (code generation only, same HLO optimizations and results up to float reassociation): the compiles of
# the fit with the SDF grid builder inside dominate this module's time on 2 cores, the octahedron fits themselves
# are tiny (as tests/test_fit.py does for its gradient check)
_O0 = {"xla_backend_optimization_level": 0}
_FIT = jax.jit(fit_sequence, static_argnames=("specs", "epochs", "collision_fn"), compiler_options=_O0)
# fit_batch's program compiled the same way (fit_batch = jax.jit of _fit_batch): programs compiled at different
# LLVM levels differ by float round-off, which the collision fit amplifies beyond the 2e-5 the batch check allows
_FIT_BATCH = jax.jit(_fit_batch, static_argnames=("specs", "epochs", "collision_fn"), compiler_options=_O0)
_EXACT: dict = {}


def _exact_term(model):
    """One reference-settings term per model (the same object keeps _FIT's cache across tests)."""
    return _EXACT.setdefault(id(model), make_collision_fn(model.faces, CollisionSettings(grid_tolerance=0.0)))


def _fits(setup):
    model, gt, kp, cfg = setup
    w = jnp.ones(kp.shape[:3])
    specs, weights = stages_from_config(cfg, collision_available=True)
    off_specs, off_weights = stages_from_config(dataclasses.replace(cfg, stages=tuple(
        dataclasses.replace(s, w_collision=0.0) for s in cfg.stages)))
    return model, kp, w, specs, weights, off_specs, off_weights


def test_octahedron_body_is_closed_and_outward():
    model = octahedron_body()
    v, f = np.asarray(model.v_template, np.float64), np.asarray(model.faces)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)  # every edge shared by exactly two triangles
    # 24 octahedra of volume 4 r^3 / 3 each, all outward
    np.testing.assert_allclose(_signed_volume(v, f), 24 * 4 * RADIUS ** 3 / 3, rtol=1e-6)


_COUNTING: dict = {}


def test_fit_grid_cache_rebuilds_every_iteration_and_separates(setup):
    """The fit carrying the grid cache at tolerance 0 (Adam stage state, real per-grid conds) rebuilds every
    needed grid (4 frames x 2 people, all overlapping) in every iteration, i.e. it evaluates the reference term
    (tests/test_collision.py: a freshly built cache gives the stateless loss and gradient; the slow test below
    compares the whole fit with the stateless one); collision on pushes two interpenetrating bodies apart where
    collision off leaves them inside each other. Two compilations of the fit (the third, the stateless reference,
    is in the slow test: each costs minutes on the shared 2-core machine)."""
    model, kp, w, specs, weights, off_specs, off_weights = _fits(setup)
    term = _COUNTING.setdefault(id(model), GridBuildCounter(_exact_term(model)))
    term.builds.clear()
    p_on, s_on = _FIT(model, kp, w, specs, weights, 1, collision_fn=term)
    p_off, _ = _FIT(model, kp, w, off_specs, off_weights, 1, collision_fn=None)
    iters = specs[0].iters
    assert sorted(term.builds) == [(k + 1, 8) for k in range(iters)], term.builds
    pen_off, pen_on = _penetration(model, p_off), _penetration(model, p_on)
    assert pen_off > 0.05
    assert pen_on < 0.8 * pen_off, (pen_off, pen_on)
    col = np.asarray(s_on.history[0][0, :, -1])
    assert col[-1] < col[0]


@pytest.mark.slow
def test_fit_grid_cache_tolerance_and_batch(setup):
    """Slow (three more compilations of the fit with the grid builder): the fit carrying the grid cache at
    tolerance 0 = the reference fit (the same term called statelessly: every grid rebuilt in every iteration); a
    1 cm tolerance checked every 3rd iteration stays close to the reference fit and separates the bodies as well;
    under fit_batch's vmap (the cache's cond becomes a select) the tolerance-0 fit is the reference."""
    model, kp, w, specs, weights, _, _ = _fits(setup)
    exact = _exact_term(model)
    cached = make_collision_fn(model.faces, CollisionSettings(grid_tolerance=0.01, grid_refresh=3))
    p_ref, s_ref = _FIT(model, kp, w, specs, weights, 1, collision_fn=_Stateless(exact))
    p_tol0, s_tol0 = _FIT(model, kp, w, specs, weights, 1, collision_fn=exact)
    for a, b in zip(jax.tree.leaves(p_tol0), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    np.testing.assert_allclose(np.asarray(s_tol0.history[0]), np.asarray(s_ref.history[0]), rtol=1e-4, atol=1e-6)
    p_tol, _ = _FIT(model, kp, w, specs, weights, 1, collision_fn=cached)
    for a, b in zip(jax.tree.leaves(p_tol), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=0.02)  # ~1 degree, 2 cm
    pen_on, pen_tol = _penetration(model, p_ref), _penetration(model, p_tol)
    assert abs(pen_tol - pen_on) < 0.1 * pen_on, (pen_on, pen_tol)
    p_b, s_b = _FIT_BATCH(model, kp[None], w[None], jnp.ones((1, kp.shape[0])), weights, specs=specs, epochs=1,
                          collision_fn=exact)
    for a, b in zip(jax.tree.leaves(p_b), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b), atol=2e-5)


def _toy_repulsion(verts, frame_mask):
    """A cheap stand-in collision term (no grids): pulls the two people's mean vertex heights apart, enough to
    see whether the term is on. Module-level function: hashable, as the fit's static collision_fn must be."""
    return jnp.mean(frame_mask) * jnp.square(jnp.mean(verts[0, ..., 1]) - jnp.mean(verts[1, ..., 1]) - 0.3)


def test_collision_in_last_epochs_only(setup):
    """fit.collision_epochs = 1 with 2 epochs: epoch 1 runs the pose stage without the term (its history column is
    0, the joints-only program, identical to a fit without the term), epoch 2 with it; the history keeps its
    [epochs, iters, terms] layout."""
    model, gt, kp, cfg = setup
    cfg2 = dataclasses.replace(cfg, epochs=2, collision_epochs=1)
    specs, weights = stages_from_config(cfg2, collision_available=True)
    assert specs[0].collision_epochs == 1
    _, _, w, _, _, off_specs, off_weights = _fits((model, gt, kp, cfg))
    _, s_last = _FIT(model, kp, w, specs, weights, 2, collision_fn=_toy_repulsion)
    col = np.asarray(s_last.history[0][..., -1])
    assert s_last.history[0].shape == (2, cfg.stages[0].iters, 7)
    assert np.all(col[0] == 0.0) and np.all(col[1] > 0.0)
    # epoch 1 of the fit = the one-epoch fit without the term (the same program as the off fit of the test above,
    # so the module compiles it once); the weight vectors differ only in w_collision, which that program ignores
    _, s_off = _FIT(model, kp, w, off_specs, off_weights, 1, collision_fn=None)
    np.testing.assert_allclose(np.asarray(s_last.history[0][0]), np.asarray(s_off.history[0][0]), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="collision_epochs"):
        dataclasses.replace(specs[0], collision_epochs=-1)
