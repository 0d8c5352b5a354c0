"""Importing pretrained checkpoints (Hugging Face directories, GGUF files) into jaxdepth."""
