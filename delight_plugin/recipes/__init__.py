"""The shell recipes' Python side: hyperparameters (the single source that ``scripts/*/train.sh``
and ``configs/`` read), WMT'16 Romanian normalisation, sentencepiece, BLEU and checkpoint averaging.

Nothing here registers a fairseq component; each module is also a small command-line tool.
"""
