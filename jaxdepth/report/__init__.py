"""Experiment reports: one command per published claim (`jaxdepth experiment NAME`, `experiment`), the sweep
specs at each size (`specs`), the markdown reports and shared plots, and `jaxdepth report
RESULTS_DIR` (`cli`) to regenerate a report without training."""
