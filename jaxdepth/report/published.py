"""The published figures the experiment reports compare against, each with its paper
(summarised in docs/literature.md)."""

from __future__ import annotations

import math

# The Depth Delusion (arXiv 2601.20994; docs/literature.md §4).
DCRIT_COEFF = 2.43  # D_crit ~= 2.43 ln W
TAU_EXPONENT = 0.44  # gradient persistence tau ~ W^0.44 ...
TAU_R2 = 0.98  # ... fitted with R^2 = 0.98

# The Curse of Depth (arXiv 2502.05795, C4 perplexities; docs/literature.md §3): where each
# baseline fails, and the LNS gain the report quotes.
# what each connection beyond the residual stream reports (docs/literature.md §10), keyed by
# the label suffix of `jaxdepth.sweep.results.variant`
CONNECTION_CLAIMS = {
    "dwa": "DenseFormer (arXiv 2402.02622): a 48-block DenseFormer matches a 72-block "
           "transformer's perplexity.",
    "mod": "Mixture-of-Depths (arXiv 2404.02258): at 12.5% capacity in every other block, an "
           "isoFLOP-optimal MoD model is as good as or better than the isoFLOP-optimal baseline, "
           "and faster per step.",
    "exit": "LayerSkip (arXiv 2404.16710): early-exit loss and layer dropout make earlier "
            "layers' exits accurate at a small cost in last-layer quality.",
}
LNS_EXAMPLE = "LNS below Pre-LN at every size (e.g. ppl 20.35 vs 21.92 at 250M)"
BASELINE_FAILS = {
    "post": "Post-LN trains at 130M (12 layers, ppl 26.95) and fails from 250M (24 layers) on "
            "(ppl ~1400).",
    "mix": "Mix-LN trains at 130M and 250M (ppl 26.07, 21.39) and fails at 350M and 1B "
           "(ppl ~1360-1410).",
    "deepnorm": "DeepNorm trains at 130M and 250M (ppl 27.17, 22.77) and fails at 350M and 1B "
                "(ppl ~1360-1410).",
}


def dcrit_paper(width: float) -> float:
    """`D_crit ~= 2.43 ln W` (The Depth Delusion, arXiv 2601.20994)."""
    return DCRIT_COEFF * math.log(width)
