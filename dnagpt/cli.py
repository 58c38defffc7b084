"""The ``dnagpt`` command: ``dnagpt <command> [--config-dir DIR] [group=option ...] [key=value ...]``.

Every command is also installed as ``dnagpt-<command>`` (``[project.scripts]``: all of them point at :func:`main`, which
reads the command from the script's name), and a clone's ``train.py``, ``evaluate.py`` and ``download.py`` call
:func:`run`. All forms take the same Hydra overrides and write under the working directory (``paths.root_dir: .``).

Adding a command (the inference issue's ``embed``, ``predict``, ``score-variants``, ``generate``) is one entry of
``COMMANDS`` and its line ``dnagpt-<name> = "dnagpt.cli:main"`` in ``pyproject.toml`` (tests/test_cli.py checks that the
two agree). A command is a function without arguments that reads ``sys.argv`` as a script does: a Hydra app
(``@hydra.main(config_path=dnagpt.commands.CONF_PATH, config_name=...)``), whose primary config the entry names so
that a bad command line is refused in one line before Hydra starts (Hydra's own report of a misspelled option spans a
dozen lines), or a function with its own parser (``download``).

Why ``dnagpt train`` runs as ``dnagpt-train``: Lightning's DDP launcher and a multirun job (``dnagpt.utils.multirun``)
re-run ``sys.argv[0]`` with the overrides, so ``sys.argv[0]`` must be a program that runs the command by itself.
"""

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.utils import get_args_parser  # Hydra's own flags (tested on hydra-core 1.3)
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from dnagpt.commands import check_config_dir, compose_config, config_groups, format_groups, one_line, program_name
from dnagpt.utils.errors import ConfigError, error_boundary

PROG = "dnagpt"


@dataclass(frozen=True)
class Command:
    target: str  # "module:function", imported when the command runs (torch is heavy; --help needs none of it)
    summary: str  # one line of ``dnagpt --help``
    config: str | None = None  # the primary config of a Hydra app, checked before Hydra starts

    def load(self) -> Callable[[], object]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


COMMANDS: dict[str, Command] = {
    "train": Command("dnagpt.commands.train:main", "pre-train or fine-tune (config train.yaml)", "train"),
    "evaluate": Command(
        "dnagpt.commands.evaluate:main", "test-split metrics and plots of a checkpoint (config evaluate.yaml)", "evaluate"
    ),
    "download": Command("dnagpt.commands.download:main", "fetch a corpus' genomes where training reads them"),
    "embed": Command("dnagpt.embed:main", "per-sequence or per-token vectors of a checkpoint (config embed.yaml)", "embed"),
    "predict": Command("dnagpt.predict:main", "a task's scores for unlabelled inputs (config predict.yaml)", "predict"),
    "score-variants": Command(
        "dnagpt.score_variants:main", "zero-shot log-likelihood ratios of VCF variants (config score_variants.yaml)",
        "score_variants",
    ),
}


def usage() -> str:
    """``dnagpt --help``: the commands, the config groups and where the outputs go."""
    width = max(map(len, COMMANDS))
    commands = "".join(f"  {name:<{width}}  {command.summary}\n" for name, command in COMMANDS.items())
    return (
        f"usage: {PROG} <command> [--config-dir DIR] [group=option ...] [key=value ...]\n\n"
        f"Commands (each also installed as {PROG}-<command>; `{PROG} <command> --help` for its own options):\n"
        f"{commands}\n"
        f"Config groups of train.yaml (group=option):\n{format_groups(config_groups())}\n"
        "Runs write under the current directory: logs/<task_name>/runs/<date>_<time>/ and data/ (downloads, caches);\n"
        "paths.log_dir=... and paths.data_dir=... move them. --config-dir DIR adds a folder of your own config groups.\n"
    )


def check_command_line(config_name: str, args: Sequence[str], prog: str) -> None:
    """Compose the config a Hydra app's command line asks for and refuse it in one line if it does not compose: a
    missing ``--config-dir``, a misspelled option or group, a key that does not exist. Sweep overrides (``-m``) are left
    to Hydra: each of their values is composed by its own job."""
    parser = get_args_parser()
    parser.prog = prog
    parsed = parser.parse_args(args)
    if parsed.config_path is not None or parsed.experimental_rerun is not None:
        return  # another primary config folder, or a pickled config: nothing of ours to compose
    check_config_dir(parsed.config_dir, prog)
    try:
        overrides = OverridesParser.create().parse_overrides(parsed.overrides)
    except HydraException as err:
        raise ConfigError(f"{prog} {' '.join(args)}: {one_line(err)}") from None
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    compose_config(fixed, parsed.config_name or config_name, user_dir=parsed.config_dir, prog=prog, echo=args)


def run(name: str, args: Sequence[str] | None = None, program: str | None = None) -> None:
    """Run command ``name`` with ``args`` (default: this process's own) as if ``program`` (default: this script) had
    been started with them."""
    if name not in COMMANDS:
        sys.exit(f"{PROG}: no command {name!r}; the commands are {', '.join(COMMANDS)} ({PROG} --help)")
    command, saved = COMMANDS[name], sys.argv
    sys.argv = [program or sys.argv[0], *(sys.argv[1:] if args is None else args)]
    try:
        if command.config is not None:
            with error_boundary():
                check_command_line(command.config, sys.argv[1:], program_name())
        command.load()()
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> None:
    """The console scripts: ``dnagpt <command> ...`` and ``dnagpt-<command> ...``."""
    script = Path(sys.argv[0])
    args = list(sys.argv[1:] if argv is None else argv)
    if script.name.startswith(f"{PROG}-"):
        return run(script.name.removeprefix(f"{PROG}-"), args)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return None
    return run(args[0], args[1:], program=str(script.with_name(f"{PROG}-{args[0]}")))
