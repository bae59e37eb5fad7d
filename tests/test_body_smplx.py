"""Parity with the reference PyTorch implementation (vchoutas/smplx) loading the same .npz file (< 1e-5 m).

torch / smplx are not runtime dependencies: install the optional extra `pip install -e '.[parity]'`; without it these
tests are skipped. float64 on both sides.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

smplx = pytest.importorskip("smplx")
torch = pytest.importorskip("torch")

from h4djax.body import SmplParams, load_body_model, smpl_forward_batch  # noqa: E402
from h4djax.body.loaders import default_body_model_path  # noqa: E402
from h4djax.body.synthetic import random_smpl_arrays  # noqa: E402
from h4djax.errors import BodyModelError  # noqa: E402

SMPLX_VERTEX_ID_KEYS = ("nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
                        "RSmallToe", "RHeel", "lthumb", "lindex", "lmiddle", "lring", "lpinky", "rthumb", "rindex",
                        "rmiddle", "rring", "rpinky")


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def smplx_from_npz(path, num_betas=10, dtype=torch.float64):
    """Adapter: smplx.SMPL only reads pickles itself, but accepts a `data_struct` with the same arrays. Its extra
    'vertex joints' (OpenPose face/feet/fingertips) index the SMPL topology; for other topologies point them at
    valid vertices (they are not compared)."""
    z = dict(np.load(path, allow_pickle=False))
    struct = smplx.utils.Struct(**{k: z[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                                      "kintree_table", "f")})
    V = z["v_template"].shape[0]
    vertex_ids = None if V == 6890 else {k: i for i, k in enumerate(SMPLX_VERTEX_ID_KEYS)}
    return smplx.SMPL(model_path=str(path), data_struct=struct, num_betas=num_betas, dtype=dtype,
                      vertex_ids=vertex_ids, batch_size=1)


def _compare(path, n=8, seed=0, atol=1e-5):
    rng = np.random.default_rng(seed)
    go = rng.normal(scale=0.8, size=(n, 3))
    bp = rng.normal(scale=0.5, size=(n, 69))
    betas = rng.normal(scale=1.0, size=(n, 10))
    transl = rng.normal(scale=0.5, size=(n, 3))
    go[0] = bp[0] = betas[0] = transl[0] = 0.0  # include the exact rest pose
    ref = smplx_from_npz(path)
    with torch.no_grad():
        t = lambda a: torch.from_numpy(a)  # noqa: E731
        out_t = ref(global_orient=t(go), body_pose=t(bp), betas=t(betas), transl=t(transl))
    v_ref, j_ref = out_t.vertices.numpy(), out_t.joints.numpy()[:, :24]
    model = load_body_model(path, dtype=np.float64)
    out = jax.jit(smpl_forward_batch)(model, SmplParams(global_orient=go, body_pose=bp, betas=betas, transl=transl))
    err_v = np.abs(np.asarray(out.vertices) - v_ref).max()
    err_j = np.abs(np.asarray(out.joints) - j_ref).max()
    assert err_v < atol and err_j < atol, (err_v, err_j)
    return err_v, err_j


def test_parity_with_smplx_random_model(tmp_path):
    path = tmp_path / "random.npz"
    np.savez(path, **random_smpl_arrays(num_verts=500, seed=30))
    err_v, err_j = _compare(path)
    assert err_v < 1e-7  # smplx adds 1e-8 to rotation vectors before the norm; otherwise identical math


def test_parity_with_smplx_default_model():
    try:
        path = default_body_model_path()
    except BodyModelError:
        pytest.skip("embedded model not built in this checkout")
    _compare(path, n=6, seed=1)
