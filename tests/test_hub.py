"""The Hugging Face Hub class, offline: a local directory, and a repository id resolved from a local Hub cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dnagpt.checkpointing import read_checkpoint
from dnagpt.data.fasta import iter_records
from dnagpt.model import DNAGPT, GPTConfig, from_pretrained, save_pretrained
from dnagpt.model.hub import PretrainedDNAGPT
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError, MissingFileError

HUMAN = Path(__file__).resolve().parent.parent / "dnagpt" / "resources" / "bundled" / "human.fa.gz"
TOK = KmerTokenizer()
CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=128)


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    """``<R>`` and the first 600 bp of the shipped human excerpt."""
    _, seq = next(iter_records(HUMAN))
    return torch.tensor([[TOK.species_id("human"), *TOK.encode_dna(seq[:600]).tolist()]])


def logits(model: DNAGPT, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


def hub_model(seed: int = 0) -> PretrainedDNAGPT:
    torch.manual_seed(seed)
    return PretrainedDNAGPT(CONFIG, TOK.to_dict())


def test_save_and_load_a_local_directory(tmp_path: Path, ids: torch.Tensor) -> None:
    model = hub_model()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.safetensors", "config.json", "dnagpt_tokenizer.json", "README.md"}
    assert json.loads((tmp_path / "config.json").read_text()) == CONFIG.to_dict()
    assert "library_name: dnagpt" in (tmp_path / "README.md").read_text()
    loaded = PretrainedDNAGPT.from_pretrained(tmp_path)
    assert not loaded.training and loaded.config == CONFIG and loaded.tokenizer == TOK
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=0, atol=0)


def test_one_folder_format_for_the_hub_class_and_the_rest(tmp_path: Path, ids: torch.Tensor) -> None:
    """What the Hub class writes is an init_from= / read_checkpoint directory, and what save_pretrained wrote loads."""
    model = hub_model(seed=1)
    model.save_pretrained(tmp_path / "hub")
    ckpt = read_checkpoint(tmp_path / "hub")
    assert ckpt.kind == "pretrained" and ckpt.tokenizer_spec == TOK.to_dict()
    restored, _ = from_pretrained(tmp_path / "hub")
    torch.testing.assert_close(logits(restored, ids), logits(model, ids), rtol=0, atol=0)
    save_pretrained(restored, tmp_path / "plain", TOK.to_dict())
    torch.testing.assert_close(logits(PretrainedDNAGPT.from_pretrained(tmp_path / "plain"), ids), logits(model, ids))


def test_from_model_wraps_trained_weights(tmp_path: Path, ids: torch.Tensor) -> None:
    torch.manual_seed(2)
    network = DNAGPT(CONFIG)
    wrapped = PretrainedDNAGPT.from_model(network, TOK.to_dict())
    torch.testing.assert_close(logits(wrapped, ids), logits(network, ids), rtol=0, atol=0)


def test_from_checkpoint_publishes_a_run(tmp_path: Path, ids: torch.Tensor) -> None:
    """A Lightning checkpoint of ours (its ``dnagpt`` entry: model config and tokenizer) becomes a Hub model; a released
    .pth, which records neither, is refused with the way round."""
    torch.manual_seed(6)
    network = DNAGPT(CONFIG)
    state = {f"model.{k}": v for k, v in network.state_dict().items()}
    ours = {"model_cfg": CONFIG.to_dict(), "tokenizer_spec": TOK.to_dict(), "wandb_run_id": None}
    torch.save({"state_dict": state, "global_step": 50, "dnagpt": ours}, tmp_path / "last.ckpt")
    published = PretrainedDNAGPT.from_checkpoint(read_checkpoint(tmp_path / "last.ckpt"))
    published.save_pretrained(tmp_path / "out")
    loaded = PretrainedDNAGPT.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(logits(loaded, ids), logits(network, ids), rtol=0, atol=0)
    torch.save(network.state_dict(), tmp_path / "release.pth")
    with pytest.raises(CheckpointError, match=r"release.pth records no model config or tokenizer .*from_model"):
        PretrainedDNAGPT.from_checkpoint(read_checkpoint(tmp_path / "release.pth"))


def test_a_repository_id_resolves_through_the_hub_cache(tmp_path: Path, ids: torch.Tensor) -> None:
    """``org/name`` as huggingface_hub lays a download out in its cache (refs/main -> snapshots/<commit>), offline."""
    model = hub_model(seed=3)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--dnagpt-org--tiny"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = PretrainedDNAGPT.from_pretrained("dnagpt-org/tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=0, atol=0)
    with pytest.raises(MissingFileError, match="dnagpt-org/other is neither a local save_pretrained directory nor"):
        PretrainedDNAGPT.from_pretrained("dnagpt-org/other", cache_dir=tmp_path / "cache", local_files_only=True)


def test_loading_is_strict_and_names_the_problem(tmp_path: Path) -> None:
    hub_model().save_pretrained(tmp_path)
    with pytest.raises(MissingFileError, match=r"nope is neither a local save_pretrained directory nor a model repository"):
        PretrainedDNAGPT.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"tokenizer mismatch .*vocab: saved 'dynamic', given 'fixed'"):
        PretrainedDNAGPT.from_pretrained(tmp_path, tokenizer_spec=KmerTokenizer("fixed").to_dict())
    weights = load_file(tmp_path / "model.safetensors")
    del weights["transformer.h.1.mlp.c_fc.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing: transformer.h.1.mlp.c_fc.weight"):
        PretrainedDNAGPT.from_pretrained(tmp_path)


def test_a_repository_published_before_the_rename_still_loads(tmp_path: Path, ids: torch.Tensor) -> None:
    model = hub_model(seed=5)
    model.save_pretrained(tmp_path / "old")
    shutil.move(tmp_path / "old" / "dnagpt_tokenizer.json", tmp_path / "old" / "tokenizer.json")
    with pytest.warns(FutureWarning, match="now written as dnagpt_tokenizer.json"):
        loaded = PretrainedDNAGPT.from_pretrained(tmp_path / "old")
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=0, atol=0)
