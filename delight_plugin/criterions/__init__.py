"""Criteria: fairseq's own ``cross_entropy``, ``adaptive_loss`` and ``label_smoothed_cross_entropy`` serve."""
