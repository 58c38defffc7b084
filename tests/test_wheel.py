"""``pip install dnagpt`` works outside a clone: the package as a new user gets it.

A wheel is built from this tree (in a copy, so the clone gets no ``build/``), installed with its own ``pip`` into a fresh
virtual environment in a temporary directory, and its console commands are run from an empty directory there: ``--help``,
a download from a local HTTP server, a one-step training on the downloaded genome, an evaluation of its checkpoint,
the bad command lines, and Lightning's DDP launcher re-running ``dnagpt train`` in a second process. Offline: the
fresh environment reuses the dependencies of the running one through a ``.pth`` line naming its site-packages (no
second torch download), but not its ``dnagpt``, which must come from the wheel (checked). The user's configs live in
a folder of their own (``--config-dir``): a corpus and an experiment that builds on ours.

Slow (a wheel build, a venv and a dozen interpreter start-ups with torch): ``make test`` runs it, as CI does.
"""

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_group
from http_files import serving

from dnagpt.cli import COMMANDS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "dnagpt" / "resources" / "bundled"
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "dnagpt")  # what the build reads

# the user's folder: a corpus of one downloaded genome and an experiment that builds on our groups
CORPUS = """\
name: excerpt
root: ${paths.data_dir}/genomes
species:
  human: {fasta: chr20_excerpt.fa.gz, url: null, sha256: null}
holdout:
  human: {val: ["20_34000001-35500000:1300001-1400000"], test: ["20_34000001-35500000:1400001-1500000"]}
"""
SMOKE = """\
# @package _global_
defaults:
  - override /corpus: excerpt
  - override /trainer: cpu
task_name: smoke
model: {block_size: 64, n_layer: 2, n_head: 2, n_embd: 32}
data: {batch_size: 2, num_workers: 0}
task: {scheduler: {warmup_steps: 0}}
trainer: {max_steps: 1, val_check_interval: 1, limit_val_batches: 1, limit_test_batches: 1, enable_progress_bar: false}
extras: {print_config: false}
"""
EVALUATE = ["trainer=cpu", "data.batch_size=2", "data.num_workers=0", "trainer.limit_test_batches=1",
            "trainer.enable_progress_bar=false", "extras.print_config=false"]  # fmt: skip


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path  # the fresh environment's scripts
    package: Path  # its site-packages/dnagpt
    work: Path  # an empty directory outside the clone: where the user runs the commands

    def run(self, program: str, *args: str, ok: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR", "VIRTUAL_ENV")}
        env |= {"PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
                "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}  # fmt: skip
        proc = run_group([str(self.bin / program), *args], timeout, cwd=self.work, env=env)
        if ok:
            assert proc.returncode == 0, f"{program} {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
        return proc


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    (src / "dnagpt/conf/local").mkdir(exist_ok=True)
    (src / "dnagpt/conf/local/default.yaml").write_text("paths: {data_dir: /a/machine/path}\n")  # must not ship
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("dnagpt-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (_site_packages(python) / "_dnagpt_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    ours = sorted(Path(sysconfig.get_paths()["purelib"]).glob("dnagpt-*.dist-info"))
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)
    # pip sees the running environment's dnagpt through the .pth line; it must leave it alone (outside its prefix)
    assert sorted(Path(sysconfig.get_paths()["purelib"]).glob("dnagpt-*.dist-info")) == ours
    work = tmp / "work"
    (work / "myconf" / "corpus").mkdir(parents=True)
    (work / "myconf" / "experiment").mkdir()
    (work / "myconf" / "corpus" / "excerpt.yaml").write_text(CORPUS)
    (work / "myconf" / "experiment" / "smoke.yaml").write_text(SMOKE)
    return Installed(wheel, venv / "bin", _site_packages(python) / "dnagpt", work)


def test_wheel_holds_configs_licences_and_scripts(installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read("dnagpt-0.1.0.dist-info/METADATA").decode()
        entry_points = whl.read("dnagpt-0.1.0.dist-info/entry_points.txt").decode()
    ours = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dnagpt/conf").rglob("*.yaml") if "local" not in p.parts}
    assert ours <= names and not any("/conf/local/" in n for n in names)
    assert {f"dnagpt/resources/{r}/README.md" for r in ("bundled", "expression", "genomes", "gsr")} <= names
    assert {"dnagpt-0.1.0.dist-info/licenses/LICENSE", "dnagpt-0.1.0.dist-info/licenses/NOTICE"} <= names
    assert "License-Expression: MIT" in metadata
    for script in ["dnagpt", *(f"dnagpt-{name}" for name in COMMANDS)]:
        assert f"{script} = dnagpt.cli:main" in entry_points


def _snapshot(package: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip


def _finite_metrics(run_dirs: list[Path]) -> dict[str, float]:
    (run,) = run_dirs
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/loss" in metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    return metrics


def test_installed_commands_download_train_evaluate(installed) -> None:
    before = _snapshot(installed.package)
    where = installed.run("python", "-c", "import dnagpt; print(dnagpt.__file__)").stdout.strip()
    assert Path(where) == installed.package / "__init__.py"  # the wheel's, not the clone's

    out = installed.run("dnagpt", "--help").stdout
    assert all(f"  {name}  " in out for name in COMMANDS)
    assert "  corpus: bundled, bundled_human, chromosomes, chromosomes_human, human, multispecies\n" in out
    out = installed.run("dnagpt", "train", "--config-dir", "myconf", "--help").stdout
    assert "corpus: bundled, bundled_human, chromosomes, chromosomes_human, excerpt, human, multispecies\n" in out

    with serving(BUNDLED) as base:
        installed.run("dnagpt", "download", "--config-dir", "myconf", "corpus=excerpt",
                      f"corpus.species.human.url={base}/human.fa.gz")  # fmt: skip
    fetched = installed.work / "data" / "genomes" / "chr20_excerpt.fa.gz"
    digest = hashlib.sha256((BUNDLED / "human.fa.gz").read_bytes()).hexdigest()
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digest
    assert (fetched.parent / "SHA256SUMS").read_text() == f"{digest}  chr20_excerpt.fa.gz\n"

    installed.run("dnagpt", "train", "--config-dir", "myconf", "experiment=smoke")
    (ckpt,) = (installed.work / "logs" / "smoke" / "runs").glob("*/checkpoints/last.ckpt")
    _finite_metrics([ckpt.parent.parent])
    assert list((installed.work / "data" / "cache").iterdir())  # the encoded genome: under the launch directory

    installed.run("dnagpt-evaluate", "--config-dir", "myconf", "corpus=excerpt", f"ckpt_path={ckpt}", *EVALUATE)
    _finite_metrics(list((installed.work / "logs" / "evaluate" / "runs").glob("*")))

    assert sorted(p.name for p in installed.work.iterdir()) == ["data", "logs", "myconf"]
    assert _snapshot(installed.package) == before  # nothing written inside site-packages


BAD = [  # what a user sees: one line on stderr, exit status 1, nothing run
    (
        ["dnagpt", "trian"],
        "dnagpt: no command 'trian'; the commands are train, evaluate, download, embed, predict, score-variants "
        "(dnagpt --help)",
    ),
    (["dnagpt", "train", "corpus=multi_species"], "Configuration error: dnagpt-train corpus=multi_species: In 'train': "
     "Could not find 'corpus/multi_species'; available: bundled, bundled_human, chromosomes, chromosomes_human, human, "
     "multispecies"),
    (["dnagpt-evaluate", "--config-dir", "nowhere", "ckpt_path=x"], "Configuration error: dnagpt-evaluate --config-dir "
     "nowhere: no such folder ({work}/nowhere); it holds your own config groups as sub-folders, "
     "e.g. experiment/my_run.yaml, used as experiment=my_run"),
]


@pytest.mark.parametrize(("argv", "line"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_installed_bad_command_line_is_one_line(installed, argv, line) -> None:
    before = sorted(installed.work.rglob("*"))
    proc = installed.run(*argv, ok=False)
    assert proc.returncode == 1
    assert proc.stderr == line.replace("{work}", str(installed.work)) + "\n"
    assert sorted(installed.work.rglob("*")) == before  # no run directory


def test_ddp_launcher_reruns_the_installed_command(installed) -> None:
    """Lightning's DDP launcher starts rank 1 as ``python <sys.argv[0]> <args>``: ``dnagpt train`` must survive that."""
    proc = installed.run("dnagpt", "train", "--config-dir", "myconf", "experiment=smoke", "trainer=ddp_sim",
                         "trainer.strategy=ddp", "data.batch_size=4", "hydra.run.dir=ddp_run")  # fmt: skip
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    assert (installed.work / "ddp_run" / "checkpoints" / "last.ckpt").exists()
