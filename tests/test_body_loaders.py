"""Body-model loaders: .npz, official-SMPL-style .pkl (chumpy objects + old scipy sparse) without chumpy installed,
errors that name the file and the key, the embedded default's location."""

from __future__ import annotations

import copyreg
import pickle
import sys
import types

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from h4djax.body import load_body_model, read_body_model_arrays
from h4djax.body.loaders import REQUIRED_KEYS, body_model_from_arrays, default_body_model_path
from h4djax.body.synthetic import random_smpl_arrays
from h4djax.errors import BodyModelError


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def arrays():
    return random_smpl_arrays(num_verts=250, seed=20)


def _assert_same_model(a, b):
    for f in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces", "kpt_regressor",
              "kpt_joint_map"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), err_msg=f)
    for f in ("J_template", "J_shapedirs"):  # derived by BLAS: summation order may differ with memory layout
        np.testing.assert_allclose(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), rtol=1e-6, atol=1e-12)
    assert a.parents == b.parents and a.kpt_names == b.kpt_names and a.coco_fit_index == b.coco_fit_index


def test_npz_round_trip(tmp_path, arrays):
    path = tmp_path / "model.npz"
    np.savez_compressed(path, **arrays)
    m = load_body_model(path)
    ref = body_model_from_arrays(arrays)
    _assert_same_model(m, ref)
    assert m.dtype == np.float32 and m.num_betas == 10 and m.num_kpts == 23
    assert m.parents[0] == -1 and m.parents[1:4] == (0, 0, 0)  # uint32-max root parent handled
    assert len(m.sha256) == 64 and str(path) in m.name
    assert len(m.coco_fit_index) == 17


def _fake_chumpy_modules():
    """A stand-in `chumpy` package whose Ch pickles like the real one (state dict with 'x' and bookkeeping;
    mattloper/chumpy ch.py __getstate__ drops only _parents and _cache)."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")
    reordering = types.ModuleType("chumpy.reordering")

    class Ch:
        def __init__(self, x=None, **terms):
            self.__dict__.update(_dirty_vars=set(), _itr=None, _depends_on_deps={}, _make_dense=False,
                                 _make_sparse=False, **terms)
            if x is not None:
                self.__dict__["x"] = x

        def __reduce_ex__(self, protocol):
            return (copyreg.__newobj__, (type(self),), dict(self.__dict__))

    class Select(Ch):  # an expression node (no 'x'): must load, and only fail if its value is requested
        pass

    for cls, mod in ((Ch, ch), (Select, reordering)):
        cls.__module__ = mod.__name__
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    chumpy.ch, chumpy.reordering = ch, reordering
    return {"chumpy": chumpy, "chumpy.ch": ch, "chumpy.reordering": reordering}, Ch, Select


def write_smpl_like_pkl(path, arrays, *, drop=()):
    """Write a pickle shaped like the official SMPL v1.x files: chumpy shapedirs (and J), scipy csc J_regressor
    referenced under the OLD module path scipy.sparse.csc, uint32 kintree root, extra keys."""
    mods, Ch, Select = _fake_chumpy_modules()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        data = {
            "v_template": arrays["v_template"],
            "shapedirs": Ch(arrays["shapedirs"]),
            "posedirs": arrays["posedirs"],
            "J_regressor": sp.csc_matrix(arrays["J_regressor"]),
            "J_regressor_prior": sp.csc_matrix(arrays["J_regressor"]),
            "weights": arrays["weights"],
            "weights_prior": arrays["weights"],
            "kintree_table": arrays["kintree_table"].astype(np.uint32),
            "f": arrays["f"].astype(np.uint32),
            "J": Select(a=Ch(np.zeros((24, 3))), idxs=np.arange(3)),
            "bs_style": "lbs",
            "bs_type": "lrotmin",
            "vert_sym_idxs": np.arange(len(arrays["v_template"])),
        }
        for k in drop:
            data.pop(k)
        blob = pickle.dumps(data, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    new_path = b"scipy.sparse.csc\ncsc_matrix"
    blob = blob.replace(b"scipy.sparse._csc\ncsc_matrix", new_path)
    assert new_path in blob and b"chumpy.ch\nCh" in blob
    path.write_bytes(blob)


def test_smpl_pkl_without_chumpy(tmp_path, arrays):
    arr = {k: v for k, v in arrays.items() if not k.startswith("kpt_")}
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    write_smpl_like_pkl(path, arr)
    had_chumpy = "chumpy" in sys.modules
    m = load_body_model(path, dtype=np.float64)
    # the loader never imports chumpy (it is not installed here: importlib.util.find_spec("chumpy") is None)
    assert ("chumpy" in sys.modules) == had_chumpy
    raw = read_body_model_arrays(path)
    np.testing.assert_array_equal(raw["shapedirs"], arr["shapedirs"])
    np.testing.assert_array_equal(raw["J_regressor"], arr["J_regressor"])
    ref = body_model_from_arrays(arr, dtype=np.float64)
    _assert_same_model(m, ref)
    # not the SMPL topology and no regressor -> joints only, no COCO correspondence
    assert m.num_kpts == 0 and m.coco_fit_index == ()


def test_pkl_missing_key_names_file_and_key(tmp_path, arrays):
    path = tmp_path / "broken.pkl"
    write_smpl_like_pkl(path, arrays, drop=("weights",))
    with pytest.raises(BodyModelError, match=r"broken\.pkl.*missing key 'weights'"):
        load_body_model(path)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_npz_missing_key_names_file_and_key(tmp_path, arrays, key):
    path = tmp_path / "partial.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if k != key})
    with pytest.raises(BodyModelError, match=rf"partial\.npz: missing key '{key}'"):
        load_body_model(path)


def test_bad_shapes_and_values_name_the_field(tmp_path, arrays):
    cases = {
        "weights": arrays["weights"][:, :20],
        "J_regressor": arrays["J_regressor"][:, :-1],
        "posedirs": arrays["posedirs"][:, :, :100],
        "v_template": np.full_like(arrays["v_template"], np.nan),
        "f": arrays["f"] + 10_000,
    }
    for key, bad in cases.items():
        path = tmp_path / f"bad_{key}.npz"
        np.savez(path, **{**arrays, key: bad})
        with pytest.raises(BodyModelError, match=rf"bad_{key}\.npz.*'{key}'"):
            load_body_model(path)


def test_num_betas_truncates_and_checks(tmp_path):
    arr = random_smpl_arrays(num_verts=120, num_betas=16, seed=21)
    path = tmp_path / "m16.npz"
    np.savez(path, **arr)
    m = load_body_model(path)
    assert m.num_betas == 10
    np.testing.assert_allclose(np.asarray(m.shapedirs), arr["shapedirs"][:, :, :10].astype(np.float32))
    assert load_body_model(path, num_betas=None).num_betas == 16
    with pytest.raises(BodyModelError, match="16 shape components, 20 requested"):
        load_body_model(path, num_betas=20)


def test_refuses_unexpected_pickled_classes(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": types.SimpleNamespace(a=1)}, protocol=2))
    with pytest.raises(BodyModelError, match=r"evil\.pkl: refusing to unpickle unexpected class types\.SimpleNamespace"):
        load_body_model(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(BodyModelError, match="not found"):
        load_body_model(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BodyModelError, match=r"junk\.npz: not a readable \.npz"):
        load_body_model(junk)
    objs = tmp_path / "objects.npz"
    np.savez(objs, v_template=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BodyModelError, match=r"objects\.npz: key 'v_template'"):
        load_body_model(objs)
    other = tmp_path / "model.txt"
    other.write_text("hello")
    with pytest.raises(BodyModelError, match="unknown body model format"):
        load_body_model(other)


def test_default_model_location():
    """`load_body_model(None)` resolves models/anny_smpl.npz relative to the package / repository root."""
    try:
        p = default_body_model_path()
    except BodyModelError as e:
        assert "anny_smpl.npz" in str(e) and "--body-model" in str(e)
        pytest.skip("embedded model not built in this checkout")
    assert p.name == "anny_smpl.npz" and p.parent.name == "models"
