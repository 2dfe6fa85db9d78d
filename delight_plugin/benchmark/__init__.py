"""Speed, memory and compute measurements of every LM architecture against fairseq's
``transformer_lm`` and the PyPI peers (``scripts/benchmark.py`` is the command line).

One concept per module: ``measure`` (timers, peak memory, MAC counting, the machine's matmul
rate), ``subjects`` (what is measured: our models and the baseline built through fairseq's
argument parsing), ``peers`` (adapters for the PyPI packages, imported lazily), ``runner``
(interleaved repeats, budgets, error cells, medians and ratios), ``report`` (JSON, markdown,
plots) and ``quality`` (perplexity against wall time from fairseq's logs).
"""
