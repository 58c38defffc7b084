"""LightningModules: one per task, sharing model construction, optimisation and checkpoint rules (``base.DNAGPTTask``)."""
