"""Config: the Harmony4D preset equals the dataclass defaults, carries the paper's numbers, and bad keys error."""

import dataclasses
import tomllib
from pathlib import Path

import pytest

from h4djax.config import Config, StageConfig, load_config, to_dict
from h4djax.errors import ConfigError

PRESET = Path(__file__).resolve().parents[1] / "configs" / "harmony4d.toml"


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        elif isinstance(v, (list, tuple)) and v and isinstance(v[0], dict):
            for i, item in enumerate(v):
                yield from _leaves(item, f"{prefix}{k}[{i}].")
        else:
            yield f"{prefix}{k}", v


def test_preset_equals_defaults_field_by_field():
    loaded = load_config(PRESET)
    default = Config()
    got, want = dict(_leaves(to_dict(loaded))), dict(_leaves(to_dict(default)))
    for key, value in want.items():
        assert got[key] == value, f"{key}: preset {got[key]!r} != default {value!r}"
    assert loaded == default
    # Every key written in the preset is a real field holding the default (a preset typo would error on load;
    # this checks the file does not silently restate a stale value).
    raw = dict(_leaves(tomllib.loads(PRESET.read_text())))
    for key, value in raw.items():
        v = want[key]
        assert (list(v) if isinstance(v, tuple) else v) == value, key


def test_preset_carries_the_papers_numbers():
    """Independent of the defaults: the literal values of PIPELINE.md section 1 (Harmony4D supp. / EgoHumans)."""
    c = load_config(PRESET)
    assert (c.filter.min_keypoints, c.filter.keypoint_conf, c.filter.oks_threshold) == (6, 0.2, 0.7)
    t = c.triangulation
    assert (t.candidate_conf, t.inlier_eps, t.min_views) == (0.5, 0.01, 2)
    r = c.refine
    assert (r.w_limb, r.w_symm, r.w_temporal) == (1.0, 1.0, 1.0)
    assert (r.interp_window, r.outlier_sigma, r.savgol_window, r.savgol_order) == (10, 10.0, 5, 3)
    table1 = {  # stage: (free, w_joint, w_reg, w_limb, w_symm, w_temporal, w_beta, w_collision)
        "global": ({"global_orient", "transl"}, 1.0, 0, 0, 0, 0, 0, 0),
        "shape": ({"betas"}, 0, 0, 1.0, 0.2, 0, 0.005, 0),
        "pose": ({"global_orient", "transl", "body_pose"}, 10.0, 0.001, 1.0, 0, 1.0, 0, 1.0),
    }
    assert [s.name for s in c.fit.stages] == ["global", "shape", "pose"]
    for s in c.fit.stages:
        free, *w = table1[s.name]
        assert set(s.free) == free
        assert [s.w_joint, s.w_reg, s.w_limb, s.w_symm, s.w_temporal, s.w_beta, s.w_collision] == w, s.name
    assert [s.iters for s in c.fit.stages] == [50, 20, 120]
    assert c.fit.stages[0].joints == "torso"
    assert (c.collision.grid_size, c.collision.padding) == (32, 1.2)


def test_unknown_key_errors_naming_the_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[triangulation]\ninlier_epsilon = 0.02\n")
    with pytest.raises(ConfigError, match="inlier_epsilon") as e:
        load_config(p)
    assert "triangulation" in str(e.value) and str(p) in str(e.value)
    p.write_text("[triangulations]\ninlier_eps = 0.02\n")
    with pytest.raises(ConfigError, match="triangulations"):
        load_config(p)
    p.write_text("[[fit.stages]]\nname = \"x\"\nw_jiont = 1.0\n")
    with pytest.raises(ConfigError, match="w_jiont"):
        load_config(p)


def test_overrides_and_type_errors(tmp_path):
    p = tmp_path / "o.toml"
    p.write_text("[triangulation]\ninlier_eps = 0.02\nmin_views = 3\n[[fit.stages]]\nname = \"only\"\niters = 5\n")
    c = load_config(p)
    assert c.triangulation.inlier_eps == 0.02 and c.triangulation.min_views == 3
    assert c.triangulation.candidate_conf == 0.5  # untouched fields keep their defaults
    assert c.fit.stages == (StageConfig(name="only", iters=5),)
    assert c.filter == Config().filter
    p.write_text("[triangulation]\nmin_views = 2.5\n")
    with pytest.raises(ConfigError, match="min_views"):
        load_config(p)
    p.write_text("[filter]\noks_threshold = \"high\"\n")
    with pytest.raises(ConfigError, match="oks_threshold"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    p.write_text("[filter\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_config_is_frozen_and_hashable():
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.filter = None  # type: ignore[misc]
    assert hash(c) == hash(Config())
