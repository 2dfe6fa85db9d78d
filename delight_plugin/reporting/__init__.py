"""Reports about built models, not building blocks: ``stats`` (parameters and MACs per block of any
model on the LM skeleton, by torch's FlopCounterMode; what ``--print-stats`` logs and the benchmark's
MACs/token column) and ``macs`` (the DeLighT reference's own counting rules, ``compute_macs_params``,
for the DeLighT models' ``--print-stats`` and ``scripts/count_params_macs.py``)."""
