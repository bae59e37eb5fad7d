"""The generator's final de-penetration step (`h4djax.synth.depenetrate`) on bodies whose overlap is known.

Two people in the T-pose side by side along x, person 1 lower by 30 cm: its right hand reaches into person 0's
left flank below the arm, by nothing in the first frames and up to 5 cm in the last. The correction is checked with the independent metric
(`eval.metrics.interpenetration`, every vertex); the trunks must hardly bend and the shifts stay horizontal.
"""

import jax.numpy as jnp
import numpy as np
import pytest

F = 8


@pytest.fixture(scope="module")
def scene():
    from h4djax.body import load_body_model
    from h4djax.synth.generate import _forward, body_topology

    model = load_body_model()
    topo = body_topology(model)
    betas = np.zeros((2, model.num_betas))
    rot = np.broadcast_to(np.eye(3), (2, F, model.num_joints, 3, 3)).copy()
    rv = np.zeros((2, F, model.num_joints, 3))
    v0, _, _ = _forward(model, rv, betas, np.zeros((2, F, 3)))
    x = v0[0, 0, :, 0]
    reach = float(-x.min())  # pelvis to the fingertip (T-pose)
    hand_y = float(v0[0, 0, x < x.min() + 0.05, 1].mean()) - 0.30  # person 1's hand height
    low = np.abs(v0[0, 0, :, 1] - hand_y) < 0.03  # person 0's body at that height (the flank: arms are higher)
    flank = float(x[low].max())
    overlap = np.linspace(-0.01, 0.05, F)  # m; negative = apart
    transl = np.zeros((2, F, 3))
    transl[1, :, 0] = flank + reach - overlap
    transl[..., 1] = 1.2  # everyone above the floor (y = 0)
    transl[1, :, 1] -= 0.30

    def forward(r, t):
        from h4djax.synth.motion import mat_to_aa

        return _forward(model, mat_to_aa(r), betas, t)[0]

    return model, topo, rot, betas, transl, forward, overlap


def _depths(verts, topo):
    from h4djax.eval.metrics import interpenetration

    return 1000 * np.asarray(interpenetration(jnp.asarray(verts[0]), jnp.asarray(verts[1]), topo.clusters).depth_max)


def test_depenetration_removes_a_known_overlap_locally(scene):
    from h4djax.body.model import SMPL_JOINT_NAMES
    from h4djax.synth.depenetrate import DepenetrationSettings, depenetrate
    from h4djax.synth.motion import mat_to_aa

    model, topo, rot, betas, transl, forward, overlap = scene
    before = _depths(forward(rot, transl), topo)
    assert before[0] == 0.0 and before[-1] > 20.0  # the hand is inside in the last frames only
    rot2, transl2, stats = depenetrate(model, topo.clusters, rot, betas, transl, forward,
                                       DepenetrationSettings(rounds=4, stride=1))
    after = _depths(forward(rot2, transl2), topo)
    print("before", before.round(1), "after", after.round(1), stats)
    assert after.max() < 3.0
    assert stats["max_depth_mm"][0] == pytest.approx(before.max(), abs=3.0)  # its own detection agrees
    angle = np.degrees(np.linalg.norm(mat_to_aa(np.swapaxes(rot, -1, -2) @ rot2), axis=-1))  # [2, F, J]
    trunk = [SMPL_JOINT_NAMES.index(n) for n in ("pelvis", "spine1", "spine2", "spine3", "left_hip", "right_hip")]
    arm = [SMPL_JOINT_NAMES.index(n) for n in ("right_shoulder", "right_elbow", "right_wrist", "right_hand")]
    assert angle[:, :, trunk].max() < 3.0  # the trunks bend little
    # The fingertips are in along the arm's axis, which a rotation moves only to second order: the people step
    # apart along x (horizontal shift), by about the depth.
    gap = (transl2[1, -1, 0] - transl2[0, -1, 0]) - (transl[1, -1, 0] - transl[0, -1, 0])
    assert 0.6 * before[-1] / 1000 < gap + 0.5 * np.radians(angle[1, -1, arm].sum())
    assert np.abs(transl2 - transl)[..., 1].max() == 0.0  # shifts are horizontal (floor contact kept)


def test_depenetration_leaves_separated_bodies_alone(scene):
    from h4djax.synth.depenetrate import DepenetrationSettings, depenetrate

    model, topo, rot, betas, transl, forward, overlap = scene
    apart = transl.copy()
    apart[1, :, 0] += 0.2
    rot2, transl2, stats = depenetrate(model, topo.clusters, rot, betas, apart, forward, DepenetrationSettings())
    assert stats["rounds"] == 0 and stats["max_depth_mm"] == [0.0]
    np.testing.assert_array_equal(rot2, rot)
    np.testing.assert_array_equal(transl2, apart)
