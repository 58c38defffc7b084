"""Weight I/O: strict loading of the release's layout, config inference, save/from_pretrained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dnagpt.checkpointing import read_checkpoint
from dnagpt.model import (
    DNAGPT,
    GPTConfig,
    config_from_release_state_dict,
    from_pretrained,
    load_release_state_dict,
    save_pretrained,
)
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError, MissingFileError

TOK = KmerTokenizer()

SPEC = {"k": 6, "vocabulary": "dynamic", "reserved": ["<0>", "<M>"]}


def tiny(seed: int = 0, **overrides) -> DNAGPT:
    torch.manual_seed(seed)
    return DNAGPT(GPTConfig(**(dict(n_layer=2, n_head=2, n_embd=32, block_size=64) | overrides))).eval()


def release_layout(model: DNAGPT) -> dict[str, torch.Tensor]:
    """Our state dict under the release's names (the inverse of the rename table)."""
    back = {"token_head.": "mlm_head.", "regression_head.": "num_regression."}
    out = {}
    for k, v in model.state_dict().items():
        for ours, theirs in back.items():
            if k.startswith(ours):
                k = theirs + k[len(ours) :]
        out[k] = v.clone()
    return out


def outputs(model: DNAGPT) -> torch.Tensor:
    ids = torch.tensor([[TOK.token_id("<R>"), 4000, TOK.number_id, TOK.eq_id, TOK.number_id]])
    with torch.no_grad():
        out = model(ids, values=torch.tensor([[0.4]]), value_pos=torch.tensor([[2]]), reg_pos=torch.tensor([[4]]))
    return torch.cat([out.logits.flatten(), out.value_pred.flatten()])


@pytest.mark.parametrize("wrap", ["raw", "model", "module", "compiled"])
def test_release_checkpoint_loads_strictly(tmp_path: Path, wrap: str) -> None:
    source = tiny(seed=1)
    sd = release_layout(source)
    assert any(k.startswith("mlm_head.") for k in sd) and any(k.startswith("num_regression.") for k in sd)
    if wrap == "module":
        sd = {f"module.{k}": v for k, v in sd.items()}
    if wrap == "compiled":
        sd = {f"_orig_mod.{k}": v for k, v in sd.items()}
    path = tmp_path / "release.pth"
    torch.save({"model": sd} if wrap == "model" else sd, path)
    target = tiny(seed=2)
    assert not torch.equal(outputs(target), outputs(source))
    load_release_state_dict(target, path)
    torch.testing.assert_close(outputs(target), outputs(source), rtol=0, atol=0)


def test_release_errors_list_every_problem() -> None:
    sd = release_layout(tiny())
    del sd["transformer.h.1.mlp.c_fc.weight"]
    sd["mlm_head.4.weight"] = torch.zeros(3)
    sd["transformer.wpe.weight"] = torch.zeros(128, 32)
    with pytest.raises(CheckpointError) as err:
        load_release_state_dict(tiny(), sd)
    message = str(err.value)
    assert "missing: transformer.h.1.mlp.c_fc.weight" in message
    assert "unexpected: token_head.4.weight" in message
    assert "shape mismatch: transformer.wpe.weight: checkpoint (128, 32) vs model (64, 32)" in message


def test_vocabulary_mismatch_names_the_vocabulary() -> None:
    fixed = release_layout(tiny(vocab_size=15_659))
    with pytest.raises(CheckpointError, match=r"built for the fixed 6-mer vocabulary .* the model for the dynamic"):
        load_release_state_dict(tiny(), fixed)


def test_missing_release_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="nope.pth not found"):
        load_release_state_dict(tiny(), tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="must be a state dict"):
        load_release_state_dict(tiny(), [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["dnagpt_0.1b_h", "dnagpt_0.1b_m", "dnagpt_3b_m"])
def test_config_inferred_from_release_shapes(name: str) -> None:
    with torch.device("meta"):  # shapes only
        sd = release_layout(DNAGPT(GPTConfig.from_name(name)))
    assert config_from_release_state_dict({"model": sd}) == GPTConfig.from_name(name)


def test_custom_shape_needs_n_head() -> None:
    sd = release_layout(tiny())
    with pytest.raises(ValueError, match="no preset has the checkpoint's shape.*pass n_head"):
        config_from_release_state_dict(sd)
    cfg = config_from_release_state_dict(sd, n_head=4)
    assert (cfg.name, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.bias) == ("custom", 2, 4, 32, 64, False)
    with pytest.raises(ValueError, match="transformer.wpe.weight is missing"):
        config_from_release_state_dict({"transformer.wte.weight": torch.zeros(3, 2)})


def test_save_and_from_pretrained_round_trip(tmp_path: Path) -> None:
    model = tiny(seed=3, padded_vocab_size=19_584)
    save_pretrained(model, tmp_path / "ckpt", {**SPEC, "reserved": ("<0>", "<M>")})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.safetensors", "config.json", "dnagpt_tokenizer.json"}
    restored, spec = from_pretrained(tmp_path / "ckpt", tokenizer_spec=SPEC)  # tuple == list once in JSON
    assert spec == SPEC and restored.config == model.config
    torch.testing.assert_close(outputs(restored.eval()), outputs(model), rtol=0, atol=0)


def test_from_pretrained_errors(tmp_path: Path) -> None:
    save_pretrained(tiny(), tmp_path, SPEC)
    with pytest.raises(CheckpointError, match=r"tokenizer mismatch .*vocabulary: saved 'dynamic', given 'fixed'"):
        from_pretrained(tmp_path, tokenizer_spec={**SPEC, "vocabulary": "fixed"})
    with pytest.raises(ValueError, match="must be JSON-serialisable"):
        save_pretrained(tiny(), tmp_path / "other", {"bad": object()})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: invalid JSON"):
        from_pretrained(tmp_path)
    (tmp_path / "dnagpt_tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match=r"dnagpt_tokenizer.json not found"):
        from_pretrained(tmp_path)


def test_directories_written_before_the_rename_still_load(tmp_path: Path) -> None:
    """The spec used to be written as tokenizer.json (a Hugging Face tokenizer's name): read, with a FutureWarning;
    read_checkpoint (init_from=, ckpt_path= of evaluate.py) too."""
    model = tiny(seed=4)
    save_pretrained(model, tmp_path, SPEC)
    (tmp_path / "dnagpt_tokenizer.json").rename(tmp_path / "tokenizer.json")
    with pytest.warns(FutureWarning, match=r"tokenizer.json: the tokenizer spec is now written as dnagpt_tokenizer.json"):
        restored, spec = from_pretrained(tmp_path, tokenizer_spec=SPEC)
    assert spec == SPEC
    torch.testing.assert_close(outputs(restored.eval()), outputs(model), rtol=0, atol=0)
    with pytest.warns(FutureWarning, match="rename it"):
        assert read_checkpoint(tmp_path).tokenizer_spec == SPEC


def test_a_hugging_face_tokenizer_file_is_not_read_as_a_spec(tmp_path: Path) -> None:
    save_pretrained(tiny(), tmp_path, SPEC)
    (tmp_path / "dnagpt_tokenizer.json").unlink()
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "added_tokens": [], "model": {"type": "BPE"}}')
    with pytest.raises(CheckpointError, match=r"tokenizer.json: is a Hugging Face tokenizer file, not a dnagpt"):
        read_checkpoint(tmp_path)
