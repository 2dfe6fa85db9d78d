"""Tasks: fairseq's own ``language_modeling`` and ``translation`` serve every architecture here."""
