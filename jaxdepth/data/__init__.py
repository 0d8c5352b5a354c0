"""Text sources, tokenizers and the grain pipeline."""
