"""h4djax: a JAX-native, differentiable re-implementation of the Harmony4D multi-view annotation pipeline."""

import os as _os
import sys as _sys

# jaxlib 0.10.2 on CPU miscompiles (via its YNN fusion) the broadcast multiply-adds of `geometry.project` /
# `world_to_camera` for more than ~11,000 points per camera in one call: results off by metres (found by the
# triangulation benchmark; 10,000 points are exact). Turning that fusion off before jax initializes its backend
# fixes it. A user who sets the flag themselves keeps their value.
_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
if "xla_cpu_experimental_ynn_fusion_type" not in _os.environ.get("XLA_FLAGS", ""):
    if "jax" in _sys.modules:
        import warnings as _warnings

        _warnings.warn("h4djax: import h4djax before jax (or set XLA_FLAGS=" + _FLAG + ") to avoid a jaxlib CPU "
                       "fusion bug that corrupts projections of more than ~11k points", stacklevel=2)
    else:
        _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

__version__ = "0.1.0"
