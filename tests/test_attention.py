"""Attention maps of GSR windows: coordinates, layer/head selection, averaging by label, the files written.

Also what every plotting module of ours owes its importer: no matplotlib backend chosen for it.
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dnagpt.data.gsr import GSRDataset
from dnagpt.data.gsr_table import read_gsr_tsv
from dnagpt.eval.attention import AttentionMaps, reduce_attention, token_edges
from dnagpt.model.config import GPTConfig
from dnagpt.tasks.gsr import GSRTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()


@pytest.fixture(scope="module")
def task_and_data():
    cfg = GPTConfig.from_name("tiny", block_size=128, n_layer=2, n_head=2, n_embd=32, vocab_size=len(TOK))
    torch.manual_seed(0)
    task = GSRTask(cfg.to_dict(), TOK.to_dict())
    t = read_gsr_tsv(resource_path("gsr/pas_subset.tsv.gz"), "pas").take(np.arange(0, 8000, 800))
    return task, SimpleNamespace(datasets={"test": GSRDataset(t, TOK, sorted(set(t.motif)))})


def test_token_edges_put_the_signal_between_token_49_and_50() -> None:
    edges = token_edges(100)
    assert edges[0] == -300 and edges[-1] == 300 and edges[50] == 0
    assert np.all(np.diff(edges) == 6)


def test_reduce_attention_picks_or_averages() -> None:
    att = [torch.rand(2, 3, 5, 5) for _ in range(4)]
    torch.testing.assert_close(reduce_attention(att, 1, 2), att[1][:, 2])
    torch.testing.assert_close(reduce_attention(att, -1, None), att[3].mean(1))
    torch.testing.assert_close(reduce_attention(att, None, None), torch.stack(att).mean((0, 2)))
    with pytest.raises(ValueError, match="layer 4 out of range: the model has 4 layers"):
        reduce_attention(att, 4, None)
    with pytest.raises(ValueError, match="head -4 out of range"):
        reduce_attention(att, None, -4)


def test_profile_is_the_answer_row_averaged_by_label(task_and_data) -> None:
    task, dm = task_and_data
    ds = dm.datasets["test"]
    means = AttentionMaps(layer=-1, head=0, batch_size=3).collect(task, torch.utils.data.DataLoader(ds, batch_size=3))
    with torch.no_grad():
        att = task.model(ds.input_ids, return_attentions=True).attentions[-1][:, 0]  # (N, L, L)
    for lab in (0, 1):
        rows = (ds.label == lab).nonzero().flatten()
        want = att[rows, 101, 1:101].mean(0).numpy()
        np.testing.assert_allclose(means[lab]["profile"], want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(means[lab]["map"], att[rows][:, 1:101, 1:101].mean(0).numpy(), rtol=1e-5, atol=1e-7)
        assert means[lab]["n"] == len(rows)
    capped = AttentionMaps(max_windows=2).collect(task, torch.utils.data.DataLoader(ds, batch_size=4))
    assert capped[0]["n"] == capped[1]["n"] == 2


def test_writes_profile_and_maps(task_and_data, tmp_path: Path) -> None:
    task, dm = task_and_data
    metrics = AttentionMaps(batch_size=4)(task, dm, None, tmp_path)
    for name in ("attention_profile.png", "attention_map_true.png", "attention_map_false.png"):
        assert (tmp_path / name).stat().st_size > 5000
    lines = (tmp_path / "attention_profile.csv").read_text().splitlines()
    assert lines[0] == "bp_from,bp_to,true_attention,false_attention" and len(lines) == 101
    assert 0.0 < metrics["attention/true/near_signal_frac"] < 1.0
    with pytest.raises(ValueError, match="max_windows"):
        AttentionMaps(max_windows=0)


@pytest.mark.slow  # a real run / a fresh interpreter: seconds
def test_importing_the_plotting_modules_keeps_the_programs_backend() -> None:
    """We draw on ``Figure`` objects, so a program that chose a backend keeps it after importing us."""
    modules = "dnagpt.callbacks, dnagpt.eval.attention, dnagpt.eval.expression, dnagpt.eval.genomes, dnagpt.eval.gsr"
    code = f"import matplotlib; matplotlib.use('svg'); import {modules}; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "svg"
