"""The two experiments on pretrained models, at their tiny size: `layerwise_finetune` trains
a source, fine-tunes it five ways and reports gain and forgetting per variant;
`pretrained_depth` analyses a given run directory (here that source, in place of SmolLM2,
whose import the GGUF tests cover) and reports near-identity layers and block pruning."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxdepth.cli import main
from jaxdepth.report.layerwise_finetune import trainable_params, variants


def test_variants_cover_all_last_k_and_lr_decay():
    assert list(variants(8)) == ["all", "last_1", "last_2", "last_4", "lr_decay"]
    assert list(variants(4)) == ["all", "last_1", "last_2", "lr_decay"]
    assert variants(8)["lr_decay"]["layer_lr_decay"] ** 7 == pytest.approx(0.1, rel=1e-5)
    params = {"embed": {"embedding": np.zeros(10)}, "layers": {"w": np.zeros((4, 3))},
              "final_norm": {"scale": np.zeros(2)}}
    assert trainable_params(params, 4, {}) == 24
    assert trainable_params(params, 4, {"train_last_layers": 1}) == 3 + 2


def test_layerwise_finetune_and_pretrained_depth_tiny(tmp_path, capsys):
    out = tmp_path / "lf"
    assert main(["experiment", "layerwise_finetune", "--size", "tiny", "--out", str(out),
                 "--no-progress"]) == 0
    r = json.loads((out / "layerwise_finetune.json").read_text())
    assert set(r["variants"]) == {"all", "last_1", "lr_decay"}
    for v in r["variants"].values():
        assert v["status"] == "done" and [c["step"] for c in v["curve"]] == [0, 3, 6]
    frozen = r["variants"]["last_1"]
    assert frozen["trainable_params"] < r["variants"]["all"]["trainable_params"]
    md = (out / "report.md").read_text()
    assert "gain on B" in md and (out / "finetune_curves.png").stat().st_size > 1000

    pd = tmp_path / "pd"
    assert main(["experiment", "pretrained_depth", "--size", "tiny", "--out", str(pd),
                 f"model={out / 'source'}", "data.seq_len=32", "--no-progress"]) == 0
    md = (pd / "report.md").read_text()
    assert "near-identity" in md and "Against the Curse of Depth" in md
    a = json.loads((out / "source" / "analysis" / "analysis.json").read_text())
    assert len(a["pruning"]["gromov"]["n"]) == 1  # n = 1 .. L/2 of a depth-2 source
    assert "data.source=pydoc" in a["data_overrides"]
    capsys.readouterr()
    assert main(["experiment", "pretrained_depth", "model.depth=3"]) == 2
    assert "takes model=PATH" in capsys.readouterr().err
    assert main(["experiment", "layerwise_finetune", "steps=10", "every=3", "--plan"]) == 2
    assert "multiple of every" in capsys.readouterr().err
    assert main(["experiment", "layerwise_finetune", "corpus_a=/no/such", "--plan"]) == 2
    assert "corpus_a '/no/such' does not exist" in capsys.readouterr().err
    assert main(["experiment", "layerwise_finetune", "--size", "paper", "steps=40",
                 "every=10", "--plan"]) == 0
    assert "40 steps" in capsys.readouterr().out
