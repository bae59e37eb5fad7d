"""Gap filling, limb-outlier rejection and Savitzky-Golay smoothing of 3D keypoint trajectories (JAX).

Re-implements the pre-processing that EgoHumans runs before its whole-sequence optimization (PIPELINE.md 1.4):
missing joints are filled by windowed polynomial interpolation (window 10), limb lengths beyond 10 sigma of the
sequence are flagged and both their joints refilled, and every trajectory is smoothed with Savitzky-Golay (5, 3).
EgoHumans does this with a Python loop per joint and per missing frame (pandas `interpolate`); here every series
(people x joints) and every frame is handled at once with masks.

Shapes: `frames` is the padded frame axis; a traced `num_frames` (L) marks frames >= L as padding (sequences are
padded at the end). Units: metres.

Choices (documented deviations from the pandas reference):
- Polynomial fill: for a missing frame t, a weighted least-squares polynomial is fit to the observed frames in
  [t - window//2, t + window//2] (a batched (order+1)x(order+1) solve in a Legendre basis, centred on t, for
  conditioning) and evaluated at t. The degree is min(order, n-1) and at most 1 when n <= 3 observed frames lie in
  the window (EgoHumans also drops to linear with <= 3 values). The fit is used only when observed frames lie on
  both sides of t inside the window, i.e. it interpolates, never extrapolates (pandas' `interpolate` does not
  extrapolate either; EgoHumans then holds the edge value with ffill/bfill).
- Long gaps (no observed frame on one side inside the window): `long_gap="linear"` interpolates linearly between
  the nearest observed frames before and after and holds the nearest observed value at the sequence ends;
  `"hold"` always holds the nearest observed value; `"none"` leaves such joints invalid. A joint never observed in
  the sequence stays invalid.
- Outliers: EgoHumans flags a limb at frame t when its length leaves mean +- sigma * std (pandas std, ddof=1) of
  the sequence and marks both joints missing, then refills. Here the statistics come from the first filling pass
  and the refill uses only the remaining observed values (EgoHumans refills from the already filled series).
  Note that with n frames no sample can be more than (n-1)/sqrt(n) sample standard deviations from the mean, so
  10 sigma can only fire on sequences longer than about 100 frames; and the outliers inflate the std they are
  tested against. The engine's default (`outlier_stat="mad"`, a documented deviation) tests against the median
  +- sigma * 1.4826 MAD instead (robust centre and spread), with its own threshold (RefineConfig.outlier_mad_sigma).
- Savitzky-Golay: scipy `savgol_filter(mode="interp")` semantics: interior frames use the convolution
  coefficients, the first and last window//2 frames evaluate the polynomial fit to the first / last `window`
  frames (of the real, unpadded sequence). A frame whose window touches an absent joint keeps its value.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from h4djax.errors import H4DError
from h4djax.refine.limbs import LIMB_DIFF, LIMB_INCIDENCE, LIMBS, NUM_KPTS

LONG_GAP_MODES = ("linear", "hold", "none")


def safe_norm(v: Float[Array, "... 3"], axis: int = -1) -> Float[Array, "..."]:
    """Euclidean norm with a zero (not NaN) gradient at v = 0 (double-where guard, as in jaxlie)."""
    sq = jnp.sum(v * v, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def safe_sqrt(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """sqrt(max(x, 0)) with a zero gradient at x <= 0."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _legendre(u: np.ndarray, order: int) -> np.ndarray:
    """Legendre polynomials P_0..P_order at u (host constants): [len(u), order+1]."""
    u = np.asarray(u, dtype=np.float64)
    out = [np.ones_like(u), u]
    for n in range(1, order):
        out.append(((2 * n + 1) * u * out[n] - n * out[n - 1]) / (n + 1))
    return np.stack(out[: order + 1], axis=-1)


def _gather_frames(x: Array, idx: Int[Array, "frames taps"]) -> Array:
    """x[idx] along the frame axis: [frames, ...] -> [frames, taps, ...]."""
    return jnp.take(x, idx, axis=0)


def fill_gaps(
    x: Float[Array, "frames series 3"],
    observed: Bool[Array, "frames series"],
    num_frames: Int[Array, ""],
    *,
    window: int,
    order: int,
    long_gap: str = "linear",
) -> tuple[Float[Array, "frames series 3"], Bool[Array, "frames series"]]:
    """Fill unobserved frames of every series (one series = one person's joint).

    Args:
      x: positions (m); values at unobserved frames are ignored (may be NaN).
      observed: True where x is a measurement. Frames >= num_frames must be False.
      num_frames: real (unpadded) length L of the sequence.
      window: polynomial window in frames (EgoHumans 10: t-5..t+5). order: maximum polynomial degree.
      long_gap: "linear" | "hold" | "none" for gaps the window does not bridge (module docstring).

    Returns:
      (x_filled, present): observed values unchanged, filled values where a rule applies, 0 where still absent;
      present = observed or filled.
    """
    if long_gap not in LONG_GAP_MODES:
        raise H4DError(f"refine.long_gap: {long_gap!r} is not one of {LONG_GAP_MODES}")
    frames = x.shape[0]
    dtype = x.dtype
    x = jnp.where(observed[..., None], x, 0.0)  # unobserved values may be NaN: keep them out of every product
    t = jnp.arange(frames)
    in_seq = (t < num_frames)[:, None]
    w_obs = observed.astype(dtype)

    # --- windowed polynomial (interpolation only: observed frames on both sides of t inside the window)
    half = window // 2
    if half > 0 and order >= 1:
        offs = np.arange(-half, half + 1)
        phi = jnp.asarray(_legendre(offs / half, order), dtype)  # [taps, D]
        phi0 = jnp.asarray(_legendre(np.zeros(1), order)[0], dtype)  # [D] basis at the target frame
        idx = t[:, None] + offs[None, :]
        inb = (idx >= 0) & (idx < frames)
        idx = jnp.clip(idx, 0, frames - 1)
        xw = _gather_frames(x, idx)  # [F, taps, N, 3]
        ww = _gather_frames(w_obs, idx) * inb[:, :, None]  # [F, taps, N]
        count = ww.sum(axis=1)
        left = (ww * (offs < 0)[None, :, None]).sum(axis=1)
        right = (ww * (offs > 0)[None, :, None]).sum(axis=1)
        # Centre on the weighted window mean so the small solve works on deviations (float32 conditioning).
        mean = jnp.einsum("fwn,fwnc->fnc", ww, xw) / jnp.maximum(count, 1.0)[..., None]
        dev = (xw - mean[:, None]) * ww[..., None]
        normal = jnp.einsum("fwn,wi,wj->fnij", ww, phi, phi)
        rhs = jnp.einsum("wi,fwnc->fnic", phi, dev)
        # Degree: min(order, n-1), and linear when n <= 3 (EgoHumans switches to order 1 there). Unused
        # coefficients get identity rows so the system stays (order+1)x(order+1) for every series.
        degree = jnp.where(count <= 3, jnp.minimum(1.0, count - 1), jnp.minimum(float(order), count - 1))
        cols = jnp.arange(order + 1, dtype=dtype) <= degree[..., None]  # [F, N, D]
        both = cols[..., :, None] & cols[..., None, :]
        normal = jnp.where(both, normal, 0.0) + jnp.where(cols, 0.0, 1.0)[..., None] * jnp.eye(order + 1, dtype=dtype)
        rhs = jnp.where(cols[..., None], rhs, 0.0)
        coef = jnp.linalg.solve(normal, rhs)  # [F, N, D, 3]
        poly = mean + jnp.einsum("d,fndc->fnc", phi0, coef)
        poly_ok = (~observed) & in_seq & (left > 0) & (right > 0)
    else:
        poly = x
        poly_ok = jnp.zeros_like(observed)

    # --- long gaps: nearest observed frame before / after (cumulative max / min of observed frame indices)
    tt = jnp.broadcast_to(t[:, None], observed.shape)
    prev = jax.lax.cummax(jnp.where(observed, tt, -1), axis=0)
    nxt = jax.lax.cummin(jnp.where(observed, tt, frames), axis=0, reverse=True)
    has_prev = prev >= 0
    has_next = nxt < frames
    take = lambda i: jnp.take_along_axis(x, jnp.broadcast_to(jnp.clip(i, 0, frames - 1)[..., None], x.shape), axis=0)
    x_prev, x_next = take(prev), take(nxt)
    both_sides = has_prev & has_next
    between = both_sides & (nxt > prev)  # observed frames have prev == nxt == t: keep 0/0 out of the graph
    span = jnp.where(between, nxt - prev, 1).astype(dtype)
    alpha = jnp.where(between, (tt - prev).astype(dtype) / span, 0.0)[..., None]
    one_side = jnp.where(has_prev[..., None], x_prev, x_next)
    if long_gap == "linear":
        gap = jnp.where(both_sides[..., None], x_prev + alpha * (x_next - x_prev), one_side)
    else:  # hold the nearer observed value (ties: the earlier one)
        nearer_prev = has_prev & (~has_next | (tt - prev <= nxt - tt))
        gap = jnp.where(nearer_prev[..., None], x_prev, x_next)
    gap_ok = (~observed) & in_seq & (~poly_ok) & (has_prev | has_next)
    if long_gap == "none":
        gap_ok = jnp.zeros_like(gap_ok)

    out = jnp.where(observed[..., None], x, jnp.where(poly_ok[..., None], poly, jnp.where(gap_ok[..., None], gap, 0.0)))
    return out, observed | poly_ok | gap_ok


def limb_lengths(x: Float[Array, "*batch kpts 3"]) -> Float[Array, "*batch limbs"]:
    """Lengths (m) of the 19 COCO-17 limbs (limbs.LIMBS), NaN-safe at zero length."""
    # HIGHEST: the +-1 contraction must stay exact float32 (no TF32 / bf16 passes on accelerators).
    vec = jnp.einsum("...kc,kl->...lc", x, jnp.asarray(LIMB_DIFF, x.dtype), precision=jax.lax.Precision.HIGHEST)
    return safe_norm(vec)


def limb_presence(present: Bool[Array, "*batch kpts"]) -> Bool[Array, "*batch limbs"]:
    """True where both joints of the limb are present."""
    return present[..., LIMBS[:, 0]] & present[..., LIMBS[:, 1]]


def masked_median(values: Float[Array, "frames ..."], mask: Bool[Array, "frames ..."]) -> tuple[Array, Array]:
    """Median over axis 0 of the entries where mask (mean of the two middle ones for even counts).

    Returns (median, any): median is 0 where no entry is valid. Sorting is differentiable almost everywhere.
    """
    count = jnp.sum(mask, axis=0)
    big = jnp.asarray(jnp.finfo(values.dtype).max, values.dtype)
    s = jnp.sort(jnp.where(mask, values, big), axis=0)
    lo = jnp.clip((count - 1) // 2, 0, values.shape[0] - 1)
    hi = jnp.clip(count // 2, 0, values.shape[0] - 1)
    pick = lambda i: jnp.take_along_axis(s, i[None], axis=0)[0]
    med = 0.5 * (pick(lo) + pick(hi))
    return jnp.where(count > 0, med, 0.0), count > 0


OUTLIER_STATS = ("mad", "std")
MAD_TO_SIGMA = 1.4826
"""MAD of a Gaussian sample times this = its standard deviation."""
MAD_FLOOR = 0.002
"""Lower bound (m) of the robust limb-length spread: exact (noise-free) lengths must not flag rounding noise."""


def limb_outliers(
    x: Float[Array, "frames people kpts 3"],
    present: Bool[Array, "frames people kpts"],
    sigma: Float[Array, ""],
    stat: str = "std",
) -> Bool[Array, "frames people kpts"]:
    """Joints of limbs whose length leaves centre +- sigma * spread of the sequence.

    stat="std" is EgoHumans `fix_limb_mistakes`: centre = mean, spread = std (ddof=1, as pandas). stat="mad" is its
    robust version: centre = median, spread = 1.4826 * median absolute deviation (>= MAD_FLOOR), i.e. the std of
    the inliers. The outliers themselves inflate the mean/std test (with n frames no sample can exceed
    (n-1)/sqrt(n) std; on the hard synthetic preset the limb-length std is 5-20x the MAD-sigma, so 10 std never
    fires while gross 20-50 cm triangulation errors pass). Statistics per person and limb over the frames where
    the limb is present. sigma <= 0 or inf disables the test.
    """
    _check_coco(x)
    if stat not in OUTLIER_STATS:
        raise H4DError(f"refine.outlier_stat: {stat!r} is not one of {OUTLIER_STATS}")
    lam = limb_lengths(x)  # [F, P, L]
    pres = limb_presence(present)
    w = pres.astype(x.dtype)
    count = w.sum(axis=0)
    if stat == "mad":
        centre, _ = masked_median(lam, pres)
        mad, _ = masked_median(jnp.abs(lam - centre), pres)
        spread = jnp.maximum(MAD_TO_SIGMA * mad, MAD_FLOOR)
    else:
        centre = (w * lam).sum(axis=0) / jnp.maximum(count, 1.0)
        var = (w * (lam - centre) ** 2).sum(axis=0) / jnp.maximum(count - 1.0, 1.0)
        spread = safe_sqrt(var)
    bad = pres & (count >= 2) & (sigma > 0) & (jnp.abs(lam - centre) > sigma * spread)
    hits = jnp.einsum("fpl,lk->fpk", bad.astype(x.dtype), jnp.asarray(LIMB_INCIDENCE, x.dtype))
    return hits > 0


@functools.lru_cache(maxsize=32)
def savgol_table(window: int, order: int) -> np.ndarray:
    """f64[window, window]: row p = coefficients that evaluate the local order-`order` LSQ polynomial at tap p.

    Row window//2 is the usual Savitzky-Golay kernel (scipy.signal.savgol_coeffs(..., use="dot")); the other rows
    reproduce scipy's mode="interp" edge handling.
    """
    return np.stack([scipy.signal.savgol_coeffs(window, order, pos=p, use="dot") for p in range(window)])


def savgol_smooth(
    x: Float[Array, "frames series 3"],
    present: Bool[Array, "frames series"],
    num_frames: Int[Array, ""],
    *,
    window: int,
    order: int,
) -> Float[Array, "frames series 3"]:
    """Savitzky-Golay smoothing of every series along frames (scipy `savgol_filter(x, window, order)`, mode="interp").

    The window of frame t starts at clip(t - window//2, 0, L - window), so interior frames use the centred kernel and
    edge frames the polynomial fit to the first/last `window` real frames. Frames whose window touches an absent
    joint, padded frames, and sequences shorter than the window keep their values. window <= order disables it.
    """
    if window <= order or window < 2:
        return x
    if window % 2 == 0:
        raise H4DError(f"refine.savgol_window: must be odd, got {window}")
    frames = x.shape[0]
    table = jnp.asarray(savgol_table(window, order), x.dtype)
    t = jnp.arange(frames)
    start = jnp.clip(t - window // 2, 0, jnp.maximum(num_frames - window, 0))
    pos = jnp.clip(t - start, 0, window - 1)
    taps = jnp.clip(start[:, None] + jnp.arange(window)[None, :], 0, frames - 1)
    xw = _gather_frames(jnp.where(present[..., None], x, 0.0), taps)  # [F, w, N, 3]
    y = jnp.einsum("fw,fwnc->fnc", table[pos], xw)
    ok = _gather_frames(present, taps).all(axis=1) & (num_frames >= window) & (t < num_frames)[:, None]
    return jnp.where(ok[..., None], y, x)


@struct.dataclass
class GapFilled:
    """Output of `preprocess` (frames >= num_frames are absent)."""

    xyz: Float[Array, "frames people kpts 3"]
    """Filled and smoothed positions (m); 0 where absent."""
    present: Bool[Array, "frames people kpts"]
    """Observed (and kept) or filled."""
    observed: Bool[Array, "frames people kpts"]
    """Valid input that survived the limb-outlier test."""
    outlier: Bool[Array, "frames people kpts"]
    """Valid input rejected as a limb-length outlier (then refilled)."""


def _check_coco(x: Array) -> None:
    if x.shape[-2] != NUM_KPTS:
        raise H4DError(f"refine: xyz has {x.shape[-2]} keypoints per person; the refinement needs COCO-17 ({NUM_KPTS})")


def preprocess(
    xyz: Float[Array, "frames people kpts 3"],
    valid: Bool[Array, "frames people kpts"],
    num_frames: Int[Array, ""],
    outlier_sigma: Float[Array, ""],
    *,
    window: int,
    order: int,
    long_gap: str,
    savgol_window: int,
    savgol_order: int,
    outlier_stat: str = "std",
) -> GapFilled:
    """EgoHumans `refine_pose3d` pre-processing: fill -> limb outliers -> refill -> Savitzky-Golay."""
    _check_coco(xyz)
    frames, people, kpts, _ = xyz.shape
    t = jnp.arange(frames)
    observed0 = valid & (t < num_frames)[:, None, None]
    flat = lambda a: a.reshape((frames, people * kpts) + a.shape[3:])
    unflat = lambda a: a.reshape((frames, people, kpts) + a.shape[2:])
    fill = functools.partial(fill_gaps, num_frames=num_frames, window=window, order=order, long_gap=long_gap)

    x1, present1 = fill(flat(xyz), flat(observed0))
    outlier = limb_outliers(unflat(x1), unflat(present1), outlier_sigma, outlier_stat) & observed0
    observed = observed0 & ~outlier
    x2, present2 = fill(flat(xyz), flat(observed))
    smooth = savgol_smooth(x2, present2, num_frames, window=savgol_window, order=savgol_order)
    return GapFilled(xyz=unflat(smooth), present=unflat(present2), observed=observed, outlier=outlier)
