"""Body-model file loaders (host side, numpy): official SMPL `.pkl`, SMPL-layout `.npz`, and the embedded default.

- `.pkl` (SMPL v1.0 / v1.1 as distributed by MPI): a Python-2 pickle in which `shapedirs` (and sometimes other
  arrays) are `chumpy.Ch` objects and `J_regressor` is a `scipy.sparse.csc_matrix` pickled by an old scipy. chumpy
  is unmaintained and does not install on current numpy, so `_SmplUnpickler` maps every chumpy class to a stub that
  keeps the pickled state (a Ch's value is its `x` entry), and scipy sparse classes to a stub that rebuilds the
  dense matrix from `data / indices / indptr` (independent of scipy's internal module layout, which moved from
  `scipy.sparse.csc` to `scipy.sparse._csc`). Only numpy / builtins / these classes may be unpickled; anything else
  is refused, so loading a model file cannot execute arbitrary code through pickle's import mechanism.
- `.npz`: keys v_template [V,3], shapedirs [V,3,B], posedirs [V,3,207], J_regressor [24,V], weights [V,24],
  kintree_table [2,24], f [F,3]; optional kpt_regressor [K,V], kpt_names [K], joint_names [24]. Loaded with
  `allow_pickle=False`.
- `load_body_model(None)`: the embedded default `models/anny_smpl.npz` (Anny-derived, CC0 / Apache-2.0).

Models without a keypoint regressor get the standard SMPL vertex-id keypoints if they have the SMPL topology
(`keypoints.smpl_fallback_keypoints`), otherwise no keypoints (joints-only use still works).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from h4djax.body.keypoints import (
    COCO23_NAMES,
    SMPL_NUM_VERTS,
    canonical_keypoint_name,
    coco_fit_index,
    smpl_fallback_keypoints,
)
from h4djax.body.model import BodyModel, _sha256, make_body_model
from h4djax.errors import BodyModelError

__all__ = ["load_body_model", "default_body_model_path", "read_body_model_arrays", "body_model_from_arrays",
           "DEFAULT_BODY_MODEL", "REQUIRED_KEYS"]

DEFAULT_BODY_MODEL = "anny_smpl.npz"
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def default_body_model_path() -> Path:
    """Location of the embedded default model: `models/anny_smpl.npz` next to the package (installed data) or at
    the repository root (source checkout / editable install)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / "models" / DEFAULT_BODY_MODEL, here.parents[2] / "models" / DEFAULT_BODY_MODEL]
    for c in candidates:
        if c.is_file():
            return c
    raise BodyModelError(
        f"embedded body model '{DEFAULT_BODY_MODEL}' not found (looked in {', '.join(str(c) for c in candidates)}); "
        "pass a model file with --body-model PATH"
    )


# ---------------------------------------------------------------------------------------------------------------------
# chumpy-free pickle loading


class _ChumpyStub:
    """Stands in for any chumpy class: keeps the pickled state; `value()` is the array a `Ch` wraps (`x`)."""

    def __init__(self, *args, **kwargs):  # copyreg._reconstructor / NEWOBJ paths call object.__new__ only
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slotstate) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def value(self, file: str, key: str) -> np.ndarray:
        x = self.__dict__.get("x")
        if x is None:
            raise BodyModelError(
                f"{file}: key '{key}' is a chumpy expression ({type(self).__name__}) rather than a stored array; "
                "it cannot be evaluated without chumpy"
            )
        return _to_array(x, file, key)


class _SparseStub:
    """Stands in for scipy.sparse matrices pickled by any scipy version; `value()` densifies."""

    format = "csc"

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)

    def value(self, file: str, key: str) -> np.ndarray:
        import scipy.sparse as sp

        d = self.__dict__
        shape = d.get("_shape", d.get("shape"))
        try:
            shape = tuple(int(s) for s in shape)
            if self.format in ("csc", "csr"):
                cls = sp.csc_matrix if self.format == "csc" else sp.csr_matrix
                m = cls((np.asarray(d["data"]), np.asarray(d["indices"]), np.asarray(d["indptr"])), shape=shape)
            else:  # coo
                m = sp.coo_matrix((np.asarray(d["data"]), (np.asarray(d["row"]), np.asarray(d["col"]))), shape=shape)
        except (KeyError, TypeError, ValueError) as e:
            raise BodyModelError(f"{file}: key '{key}': unreadable sparse matrix ({e})") from None
        return np.ascontiguousarray(m.toarray(), dtype=np.float64)


def _sparse_stub(fmt: str) -> type:
    return type(f"_{fmt}_matrix_stub", (_SparseStub,), {"format": fmt})


_SAFE_BUILTINS = {"object", "set", "frozenset", "dict", "list", "tuple", "slice", "complex", "bytearray", "bytes",
                  "str", "int", "float", "bool"}


class _SmplUnpickler(pickle.Unpickler):
    """Unpickler for SMPL model files: chumpy and scipy.sparse mapped to stubs, only numpy/builtins otherwise."""

    def __init__(self, fh, file: str):
        super().__init__(fh, encoding="latin1")  # Python-2 pickles: numpy buffers were str
        self._file = file

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyStub,), {})
        if module.startswith("scipy.sparse"):
            for fmt in ("csc", "csr", "coo"):
                if name.startswith(fmt + "_"):
                    return _sparse_stub(fmt)
        if module.startswith("numpy"):
            if module.startswith("numpy.core") and hasattr(np, "_core"):
                module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 renamed the module
            return super().find_class(module, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return super().find_class(module, name)
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if module == "_codecs" and name == "encode":
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        raise BodyModelError(f"{self._file}: refusing to unpickle unexpected class {module}.{name}")


def _to_array(x, file: str, key: str) -> np.ndarray:
    if isinstance(x, (_ChumpyStub, _SparseStub)):
        return x.value(file, key)
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise BodyModelError(f"{file}: key '{key}': not an array ({e})") from None


def _read_pkl(path: Path) -> dict:
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = _SmplUnpickler(fh, file).load()
    except BodyModelError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise BodyModelError(f"{file}: not a readable SMPL pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise BodyModelError(f"{file}: expected a pickled dict of model arrays, got {type(data).__name__}")
    return data


def _read_npz(path: Path) -> dict:
    file = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError as e:  # object arrays need pickle: refuse, name the key
                    raise BodyModelError(
                        f"{file}: key '{k}' is stored as a pickled object array ({e}); save plain arrays instead"
                    ) from None
            return out
    except BodyModelError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise BodyModelError(f"{file}: not a readable .npz file ({type(e).__name__}: {e})") from None


def read_body_model_arrays(path) -> dict[str, np.ndarray]:
    """Read the raw arrays of a `.pkl` or `.npz` model file (chumpy/sparse values resolved to dense numpy).

    Raises BodyModelError naming the file and the missing key when a required SMPL-layout key is absent.
    """
    path = Path(path)
    if not path.is_file():
        raise BodyModelError(f"{path}: body model file not found")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if path.suffix.lower() == ".npz" or magic.startswith(b"PK"):
        raw = _read_npz(path)
    elif path.suffix.lower() in (".pkl", ".pickle") or magic[:1] == b"\x80":
        raw = _read_pkl(path)
    else:
        raise BodyModelError(f"{path}: unknown body model format (expected .pkl or .npz)")
    for k in REQUIRED_KEYS:
        if k not in raw:
            raise BodyModelError(f"{path}: missing key '{k}' (SMPL-layout keys: {', '.join(REQUIRED_KEYS)})")
    out = {}
    for k in (*REQUIRED_KEYS, "kpt_regressor", "kpt_joint_map", "kpt_names", "joint_names"):
        if k in raw and raw[k] is not None:
            out[k] = _to_array(raw[k], str(path), k)
    return out


def body_model_from_arrays(arrays: dict, *, num_betas: int | None = 10, dtype=np.float32, name: str = "",
                           sha256: str = "") -> BodyModel:
    """Build a BodyModel from SMPL-layout arrays (as returned by `read_body_model_arrays`).

    Keypoints: the file's `kpt_regressor` (+ `kpt_names`, `kpt_joint_map`) when present; else the SMPL vertex-id
    fallback for the SMPL topology; else none.
    """
    kt = np.asarray(arrays["kintree_table"])
    if kt.ndim != 2 or kt.shape[0] != 2:
        raise BodyModelError(f"{name}: field 'kintree_table': expected shape [2, joints], got {kt.shape}")
    # Row 0 = parent ids; the root's parent is stored as -1 or uint32 max (both handled in make_body_model).
    parents = kt[0].astype(np.int64)
    V = int(np.asarray(arrays["v_template"]).shape[0])
    if "kpt_regressor" in arrays:
        reg = np.asarray(arrays["kpt_regressor"], dtype=np.float64)
        jmap = arrays.get("kpt_joint_map")
        names = tuple(str(n) for n in np.asarray(arrays["kpt_names"]).reshape(-1)) if "kpt_names" in arrays else ()
        names = tuple(canonical_keypoint_name(n) for n in names)
        if names and set(names) <= set(COCO23_NAMES) and len(set(names)) == len(names):
            # One keypoint order for every model: COCO-17 then the COCO-WholeBody foot order (left big toe, small
            # toe, heel, then right), whatever order the file stores them in.
            order = sorted(range(len(names)), key=lambda i: COCO23_NAMES.index(names[i]))
            reg = reg[order]
            jmap = None if jmap is None else np.asarray(jmap)[order]
            names = tuple(names[i] for i in order)
    elif V == SMPL_NUM_VERTS and len(parents) == 24:
        reg, jmap, names = smpl_fallback_keypoints(V)
    else:
        reg, jmap, names = None, None, ()
    joint_names = None
    if "joint_names" in arrays:
        joint_names = tuple(str(n) for n in np.asarray(arrays["joint_names"]).reshape(-1))
    return make_body_model(
        v_template=arrays["v_template"],
        shapedirs=arrays["shapedirs"],
        posedirs=arrays["posedirs"],
        J_regressor=arrays["J_regressor"],
        weights=arrays["weights"],
        faces=np.asarray(arrays["f"]).astype(np.int64),
        parents=parents,
        kpt_regressor=reg,
        kpt_joint_map=jmap,
        kpt_names=names,
        joint_names=joint_names,
        coco_fit_index=coco_fit_index(names, len(parents)) if names else (),
        num_betas=num_betas,
        dtype=dtype,
        name=name,
        sha256=sha256,
    )


def load_body_model(path: str | os.PathLike | None = None, *, num_betas: int | None = 10,
                    dtype=np.float32) -> BodyModel:
    """Load a body model: None -> the embedded `models/anny_smpl.npz`; else an SMPL `.pkl` or SMPL-layout `.npz`.

    num_betas: shape components kept (10 = SMPL default; None keeps all). dtype: float32 in the library, float64 in
    parity tests. Raises BodyModelError naming the file (and key/field) if the file is missing or malformed.
    """
    p = default_body_model_path() if path is None else Path(path).expanduser()
    arrays = read_body_model_arrays(p)
    return body_model_from_arrays(arrays, num_betas=num_betas, dtype=dtype, name=str(p), sha256=_sha256(p))
