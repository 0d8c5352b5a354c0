"""Decoder-only transformer whose layer stack is one scanned block."""

from jaxdepth.model.transformer import Transformer, count_params

__all__ = ["Transformer", "count_params"]
