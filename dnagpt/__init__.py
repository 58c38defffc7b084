"""dnagpt: a trainable re-implementation of DNAGPT (arXiv 2307.05628)."""
