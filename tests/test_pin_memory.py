"""``data.pin_memory`` reaches every loader of every task's DataModule (a GPU user turns it on with one override)."""

import pytest

from dnagpt.pipeline import build_parts


@pytest.mark.parametrize(("task", "extra"), [("gsr", ["model.block_size=128"]), ("classification", ["model.block_size=128"]),
                                             ("regression", []), ("expression", ["model.block_size=512"]),
                                             ("genomes", ["model.block_size=256"])])  # fmt: skip
@pytest.mark.parametrize("pin", [True, False])
def test_data_pin_memory_reaches_the_train_val_and_test_loaders(make_cfg, task: str, extra: list[str], pin: bool) -> None:
    _, dm, _ = build_parts(make_cfg("train", [f"task={task}", *extra, f"data.pin_memory={str(pin).lower()}"]))
    dm.setup("fit")
    dm.setup("test")
    loaders = [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()]
    assert [loader.pin_memory for loader in loaders] == [pin] * 3
