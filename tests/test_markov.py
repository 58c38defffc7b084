"""The order-k Markov yardstick: hand-counted estimates, N and sequence boundaries, a known source recovered, the counts
cached once for all the ranks of a run, and the grid script (scripts/markov_grid.py) on the bundled corpus."""

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from inference_data import save_ckpt, tiny_task

from dnagpt.model.markov import MarkovModel, choose_order
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.tasks.yardsticks import markov_cache_file
from dnagpt.utils.locks import writer_lock

ROOT = Path(__file__).resolve().parents[1]


def test_order_one_estimate_equals_a_hand_count() -> None:
    model = MarkovModel(1).fit(["ACAC", "AG"])
    # order 0 counts A 3, C 2, G 1 (6 bases); order 1 contexts: A->C twice, C->A once, A->G once
    beta = 2.0
    p0 = {b: (n + beta * 0.25) / (6 + beta) for b, n in zip("ACGT", (3, 2, 1, 0), strict=True)}
    # scoring "ACG": A has no context (order-0 estimate); C after A: (2 + β p0(C)) / (3 + β); G after C: C was followed
    # only by A, once: (0 + β p0(G)) / (1 + β)
    want = -(math.log2(p0["A"]) + math.log2((2 + beta * p0["C"]) / (3 + beta)) + math.log2(beta * p0["G"] / (1 + beta)))
    total, n = model.bits(["ACG"], beta)
    assert n == 3 and total[1] == pytest.approx(want)
    assert total[0] == pytest.approx(-sum(math.log2(p0[b]) for b in "ACG"))


def test_n_breaks_contexts_and_sequences_stay_apart() -> None:
    joined = MarkovModel(2).fit(["ACGTNACGT"])
    split = MarkovModel(2).fit(["ACGT", "ACGT"])
    for a, b in zip(joined.counts, split.counts, strict=True):  # the N is neither counted nor a context
        np.testing.assert_array_equal(a, b)
    across = MarkovModel(2).fit(["ACGTACGT"])
    assert across.counts[2].sum() > split.counts[2].sum()  # without the break, contexts run through
    assert MarkovModel(1).bits(["NNNA"], 1.0)[1] == 1  # only clean bases are scored


def test_a_known_order_two_source_is_recovered() -> None:
    rng = np.random.default_rng(0)
    table = rng.dirichlet(np.full(4, 0.3), size=16)  # P(next | last two bases)

    def sample(n: int) -> np.ndarray:
        codes = [0, 1]
        for _ in range(n):
            codes.append(rng.choice(4, p=table[codes[-1] + 4 * codes[-2]]))
        return np.frombuffer(bytes(b"ACGT"[c] for c in codes), dtype=np.uint8), codes

    (train, _), (val, val_codes) = sample(100_000), sample(20_000)
    model = MarkovModel(5).fit([train])
    order, beta, grid = choose_order(model, [val])
    truth = -np.mean([math.log2(table[val_codes[i - 1] + 4 * val_codes[i - 2]][val_codes[i]])
                      for i in range(2, len(val_codes))])  # fmt: skip
    assert order == 2
    assert grid[(order, beta)] == pytest.approx(truth, abs=0.01)
    assert grid[(0, beta)] > grid[(1, beta)] > grid[(2, beta)]


def grid_script():
    spec = importlib.util.spec_from_file_location("markov_grid", ROOT / "scripts" / "markov_grid.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


class Regions:
    """What ``fitted_markov`` reads of a data module."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def training_sequences(self):
        yield from (np.frombuffer(s, dtype=np.uint8) for s in (b"ACGTTGCAAC" * 50, b"GGATCC" * 40))


# a rank of a run: counts (or loads) the regions' Markov counts in the cache folder argv[1], saves them to argv[2]
RANK = """
import logging, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "tests")
from test_markov import Regions
from dnagpt.tasks.yardsticks import fitted_markov
logging.basicConfig(level=logging.INFO)
np.save(sys.argv[2], np.concatenate(fitted_markov(Regions(Path(sys.argv[1])), 3).counts))
"""


@pytest.mark.slow  # two fresh interpreters: seconds
def test_the_ranks_of_a_run_count_once_and_share_the_cache(tmp_path: Path) -> None:
    """Two DDP ranks once wrote the same ``.partial`` file and the second rename failed (FileNotFoundError: a dead rank
    1, a hung run). Now they wait for the writer lock, one counts and writes, the other loads its counts."""
    regions = Regions(tmp_path)
    forward = list(regions.training_sequences())
    expected = np.concatenate(MarkovModel(3).fit([*forward, *(s[::-1] for s in forward)]).counts)
    cache = markov_cache_file(tmp_path, forward, 3)
    cache.parent.mkdir()
    logs = [tmp_path / f"rank{i}.log" for i in range(2)]
    with writer_lock(cache, "holding"):  # both ranks reach the cache while it is locked
        ranks = []
        for i, log in enumerate(logs):
            with open(log, "w") as err:
                ranks.append(subprocess.Popen([sys.executable, "-c", RANK, str(tmp_path), str(tmp_path / f"rank{i}.npy")],
                                              cwd=ROOT, stderr=err))  # fmt: skip
        deadline = time.monotonic() + 120
        while not all("Waiting for " in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(r.poll() is None for r in ranks), [x.read_text() for x in logs]
            time.sleep(0.05)
    assert [rank.wait(timeout=120) for rank in ranks] == [0, 0], [log.read_text() for log in logs]
    assert sum("counted" in log.read_text() for log in logs) == 1  # one counted, the other loaded its counts
    for counts in [np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")]:
        assert np.array_equal(counts, expected)
    assert sorted(p.name for p in cache.parent.iterdir()) == [f".{cache.name}.lock", cache.name]  # no partial left


def test_markov_grid_script_scores_every_cell_on_both_held_out_splits(tmp_path: Path) -> None:
    script = grid_script()
    out = tmp_path / "grid.json"
    args = ["--max-order", "2", "--betas", "2", "8", "--out", str(out)]
    script.main(["corpus=bundled", f"paths.cache_dir={tmp_path}", *args])
    scores = json.loads(out.read_text())
    cells = [f"k={k} beta={b}" for b in ("2", "8") for k in range(3)]
    assert {split: sorted(c) for split, c in scores.items()} == {"val": sorted(cells), "test": sorted(cells)}
    for split in ("val", "test"):  # real DNA: just under 2 bits a base, and context helps
        assert all(1.85 < v < 2.0 for v in scores[split].values())
        assert scores[split]["k=2 beta=8"] < scores[split]["k=0 beta=8"]


def test_markov_grid_script_compares_a_checkpoint_species_by_species(tmp_path: Path) -> None:
    """``--ckpt``: each species' held-out windows, the model against the yardstick's validation choice, and the rows
    partition the windows. An untrained model spreads its mass evenly over the ids: log2(19,564) / 6 = 2.38 bits a base."""
    script = grid_script()
    ckpt = save_ckpt(tiny_task(PretrainTask), tmp_path / "pretrain.ckpt")
    out = tmp_path / "grid.json"
    windows = ["data.val_windows=12", "data.test_windows=12", "model.block_size=128"]
    script.main(["corpus=bundled", f"paths.cache_dir={tmp_path}", *windows, "--max-order", "2", "--betas", "8",
                 "--out", str(out), "--ckpt", str(ckpt)])  # fmt: skip
    rows = json.loads(out.read_text())["by_species"]
    for split in ("val", "test"):
        mine = [r for r in rows if r["split"] == split]
        assert sum(r["windows"] for r in mine) == 12 and len({r["species"] for r in mine}) == len(mine) > 1
        assert all(2.35 < r["model"] < 2.41 and 1.85 < r["markov"] < 2.1 for r in mine)
