"""jaxdepth: a JAX/Flax laboratory for what depth does to a transformer.

Shape suffixes. An array's name ends with one capital letter per axis (`x_BTW` is batch x
positions x width), as in nanodo; each letter has one meaning in the whole package, and
the same letter names the axis's size in array code:

    B  sequences in a batch                 N  attention heads
    C  batches stacked into an eval set     H  head dimension (W / N)
    S  a token window: T + 1 tokens         G  rotary frequency pairs (H / 2)
       (inputs and next-token targets)      F  FFN hidden units
    T  positions (data.seq_len)             V  vocabulary
    W  width (model.width, d_model)         M  layer masks (layer removal)
    L  layers (model.depth)                 Q  tokens of a flattened batch (B * T)
    X  residual-stream states, L + 1: the embedding output, then each layer's output

The scaling-law fitter (`jaxdepth.scaling`) names its own axes: R runs (data points),
I multi-start initialisations, P law parameters, J features, K log-sum-exp terms.
Formulas in docstrings keep their papers' notation (e.g. N parameters and D tokens in
Chinchilla's law), each with its citation.
"""
