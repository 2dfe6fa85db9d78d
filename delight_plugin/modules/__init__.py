"""Building blocks shared by the architectures."""
