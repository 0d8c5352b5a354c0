"""Diagnostics of depth: signal propagation, and per-layer analysis of trained models."""
