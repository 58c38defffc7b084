"""Inference on unlabelled inputs: what ``dnagpt.embed`` and ``dnagpt.predict`` share.

- :mod:`~dnagpt.inference.records`: the input files (FASTA, BED + reference FASTA, a table with a sequence column) read
  lazily as named records, each able to place an error at its file, line and column.
- :mod:`~dnagpt.inference.prompts`: how a task turns a record into the sample its ``predict_step`` reads.
- :mod:`~dnagpt.inference.npy`: a ``.npy`` written row by row (memory stays flat) and its index of record names.
- :mod:`~dnagpt.inference.predictions`: the streaming DataModule of ``trainer.predict`` and the writer that keeps each
  rank's rows in a part file and merges them in input order.
"""
