"""Split names and the rules that assign rows to them, shared by every DataModule."""

SPLITS = ("train", "val", "test")
