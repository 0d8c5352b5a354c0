"""Configuration: YAML + overrides, validation messages that name the key."""

from __future__ import annotations

import pytest

from jaxdepth.config import RunConfig, from_dict, load_config, to_dict
from jaxdepth.errors import UserError


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nmodel:\n  depth: 6\n  width: 64\n")
    cfg = load_config(p, ["model.heads=8", "train.lr=1e-3", "model.tied_embeddings=false",
                          "data.source=stdlib"])
    assert (cfg.name, cfg.model.depth, cfg.model.heads, cfg.train.lr) == ("x", 6, 8, 1e-3)
    assert cfg.model.tied_embeddings is False
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    with pytest.raises(Exception):
        cfg.model.depth = 3  # frozen


def test_committed_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        try:
            load_config(path)
        except UserError as e:  # sweep specs are not run configs
            assert "is a sweep spec" in str(e) and "sweep" in path.stem, (path, e)


def test_a_sweep_spec_given_to_train_names_jaxdepth_sweep(tmp_path, capsys):
    from jaxdepth.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase:\n  model:\n    depth: 2\ngrid:\n  model.width: [32, 64]\n")
    assert main(["train", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "is a sweep spec" in err and f"jaxdepth sweep {spec}" in err
    assert "unknown config key" not in err


def test_replace_reads_no_disk_and_loading_checks_paths(tmp_path):
    """`replace` (run by every sweep expansion and experiment) validates values only; the
    path checks run where a config is loaded."""
    from jaxdepth.config import replace

    cfg = replace(RunConfig(), data=dict(source=str(tmp_path / "later.txt")))
    assert cfg.data.source.endswith("later.txt")
    with pytest.raises(UserError, match="does not exist"):
        load_config(None, [f"data.source={tmp_path / 'later.txt'}"])
    with pytest.raises(UserError, match="train.init_from"):
        load_config(None, [f"train.init_from={tmp_path}"])


@pytest.mark.parametrize("overrides, words", [
    (["model.depht=4"], ["model.depht", "did you mean 'model.depth'", "valid keys", "width"]),
    (["modle.depth=4"], ["'modle'", "model", "train", "data"]),
    (["model.width=100", "model.heads=3"], ["model.width (100)", "model.heads (3)", "divisible"]),
    (["model.depth=0"], ["model.depth must be >= 1", "got 0"]),
    (["model.scheme=deep"], ["model.scheme 'deep'", "pre", "lns"]),
    (["model.depth=two"], ["model.depth", "integer", "two"]),
    (["data.source=/no/such/file.txt"], ["data.source '/no/such/file.txt' does not exist"]),
    (["train.warmup_steps=500", "train.steps=100"], ["train.warmup_steps", "100"]),
    (["model.depth"], ["key.sub=value"]),
])
def test_bad_input_messages(overrides, words):
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_config_file():
    with pytest.raises(UserError, match="not found"):
        load_config("/no/such.yaml")
