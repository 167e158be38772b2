"""Scores, aggregates, reference tables and plots of the paper benchmarks.

- `aggregate`: the papers' scoring windows, normalisation, mean / median / IQM / optimality gap with
  rliable's stratified bootstrap intervals, learning curves on a fixed step grid, Crafter success
  rates and score.
- `compare`: methods side by side with rliable: performance profiles and probability of improvement.
- `reference`: the compact published tables in `results/reference/` (derived by
  `results/derive_reference.py` from `../shared/reference_scores/`).
- `runs`: our runs' metrics.jsonl files, single logdirs or sweeps.
- `curves`: the small committed record of one run's curve (`results/curves/*.csv`).
- `plots`: matplotlib figures and the report behind `results/plot.py`.
- `summary`: the report's Markdown tables of final scores and aggregates.

Only `plots` and `compare` import matplotlib, and rliable is imported only when an aggregate is
computed; none of these modules imports TensorFlow.
"""
