"""The ``dnagpt`` command (dnagpt/cli.py): its sub-commands and the ``dnagpt-<command>`` scripts, ``--help``, a user's
``--config-dir``, and a bad command line refused in one line before anything runs.

In-process through ``dnagpt.cli.main`` with the real packaged configs and Hydra's real app (``--cfg job`` and
``--help`` compose without training); one real ``python train.py`` process for the clone's thin wrapper. The installed
wheel is tested in tests/test_wheel.py.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dnagpt.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
CORPORA = "bundled, bundled_human, chromosomes, chromosomes_human, human, multispecies"

# a user's experiment that builds on one of ours and overrides it: what docs/install.md shows
MY_CPU = """\
# @package _global_
defaults:
  - pretrain_cpu              # ours: dnagpt/conf/experiment/pretrain_cpu.yaml
  - override /corpus: bundled
task_name: my_cpu
trainer:
  max_steps: 7
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty launch directory, Hydra's short reports (as users get them) and a script name of our own."""
    run = tmp_path / "work"
    run.mkdir()
    monkeypatch.chdir(run)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "dnagpt")])
    return run


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "myconf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "my_cpu.yaml").write_text(MY_CPU)
    return conf


def test_every_command_is_a_console_script() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"dnagpt": "dnagpt.cli:main", **{f"dnagpt-{name}": "dnagpt.cli:main" for name in COMMANDS}}
    for command in COMMANDS.values():
        assert callable(command.load())


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_help_lists_the_commands_and_the_config_groups(workdir, capsys, argv) -> None:
    main(argv)
    out = capsys.readouterr().out
    assert out.startswith("usage: dnagpt <command>")
    for name, command in COMMANDS.items():
        assert f"  {name}  " in out and command.summary in out
    assert f"  corpus: {CORPORA}\n" in out and "  model: dnagpt_0.1b_h, dnagpt_0.1b_m, dnagpt_3b_m, tiny\n" in out
    assert "hydra" not in out
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_hydra_command_help_lists_groups_with_the_users(workdir, user_dir, capsys, command) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--config-dir", str(user_dir), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dnagpt {command} [--config-dir DIR]")
    assert f"corpus: {CORPORA}\n" in out
    assert "experiment: " in out and "my_cpu, pretrain_cpu" in out  # ours and the user's, in one list
    assert list(workdir.iterdir()) == []


def test_download_help_lists_groups(workdir, user_dir, capsys) -> None:
    main(["download", "--config-dir", str(user_dir), "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: dnagpt-download [--config-dir DIR]")
    assert f"corpus: {CORPORA}\n" in out and "my_cpu" in out


def test_user_experiment_extends_and_overrides_ours(workdir, user_dir, capsys) -> None:
    main(["train", "--config-dir", str(user_dir), "experiment=my_cpu", "--cfg", "job"])
    cfg = OmegaConf.create(capsys.readouterr().out)
    assert cfg.task_name == "my_cpu" and cfg.trainer.max_steps == 7  # the user's values
    assert cfg.corpus.name == "bundled"  # the user's override of our experiment's corpus=chromosomes
    assert cfg.data.batch_size == 16 and cfg.trainer.val_check_interval == 250  # ours, from pretrain_cpu
    assert list(workdir.iterdir()) == []  # --cfg runs nothing


@pytest.mark.skipif((ROOT / "dnagpt/conf/local/default.yaml").exists(), reason="this clone's own local config comes first")
def test_user_local_config_is_read(workdir, user_dir, capsys) -> None:
    """``DIR/local/default.yaml``: the machine settings docs/install.md shows (our defaults' ``optional local``)."""
    (user_dir / "local").mkdir()
    (user_dir / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  data_dir: /scratch/me/data\n")
    main(["train", "--config-dir", str(user_dir), "--cfg", "job"])
    assert OmegaConf.create(capsys.readouterr().out).paths.data_dir == "/scratch/me/data"


def test_script_name_picks_the_command(workdir, user_dir, capsys, monkeypatch) -> None:
    """``dnagpt-train ...`` is ``dnagpt train ...`` (the form Lightning's DDP launcher re-runs)."""
    monkeypatch.setattr(sys, "argv", [str(workdir.parent / "bin" / "dnagpt-train")])
    main(["--config-dir", str(user_dir), "experiment=my_cpu", "--cfg", "job"])
    assert OmegaConf.create(capsys.readouterr().out).task_name == "my_cpu"


def test_unknown_command_is_one_line(workdir) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["trian", "corpus=human"])
    assert str(exit_.value) == (
        "dnagpt: no command 'trian'; the commands are train, evaluate, download, embed, predict, score-variants "
        "(dnagpt --help)"
    )


BAD = [  # (argv, what the one line says after "Configuration error: dnagpt-<command> <args>: ")
    (["train", "corpus=multi_species"], f"In 'train': Could not find 'corpus/multi_species'; available: {CORPORA}"),
    (["evaluate", "corpus=multi_species"], f"In 'evaluate': Could not find 'corpus/multi_species'; available: {CORPORA}"),
    (["download", "corpus=multi_species"], f"In 'train': Could not find 'corpus/multi_species'; available: {CORPORA}"),
    (["train", "--config-dir", "{user}", "experiment=my_cpuu"], "Could not find 'experiment/my_cpuu'; available: "
     "cross_species_gsr, finetune_expression,"),
    (["train", "corpsu=bundled"], "Could not override 'corpsu'. To append to your config use +corpsu=bundled; "
     "did you mean the config group corpus? (groups: analysis, callbacks, corpus,"),
    (["train", "trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'. To append to your config use +trainer"),
    (["train", "--config-dir", "nowhere"], "no such folder ({work}/nowhere); it holds your own config groups as"),
    (["download", "--config-dir", "nowhere"], "no such folder ({work}/nowhere); it holds your own config groups as"),
    (["train", "-m", "model=tiny,huge", "trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_command_line_is_one_line_before_anything_runs(workdir, user_dir, argv, message) -> None:
    argv = [a.replace("{user}", str(user_dir)) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    text = str(exit_.value)
    assert text.startswith(f"Configuration error: dnagpt-{argv[0]} {' '.join(argv[1:])}: "), text
    assert message.replace("{work}", str(workdir)) in text and "\n" not in text, text
    assert list(workdir.iterdir()) == []


def test_train_py_in_a_clone_is_the_same_command(tmp_path) -> None:
    """The documented ``python train.py ...`` answers as ``dnagpt train`` does: one line, no traceback, no run dir."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "corpus=multi_species"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == (
        "Configuration error: python train.py corpus=multi_species: In 'train': Could not find "
        f"'corpus/multi_species'; available: {CORPORA}\n"
    )
    assert list(tmp_path.iterdir()) == []
