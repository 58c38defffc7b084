"""The commands' entry functions (one module each; ``dnagpt.cli`` is their registry) and what they share: our configs,
composed as a Hydra app composes them, with a bad command line reported in one line.

The configs are package data, the module ``dnagpt.conf``, found through the package wherever it is installed
(``pkg://dnagpt.conf``), never through a path relative to the working directory. A user's own folder
(``--config-dir DIR``, Hydra's flag) is searched *after* ours, exactly as Hydra's ``--config-dir`` is: it adds config
groups and options (an experiment, a corpus, ``local/default.yaml`` for machine paths) but cannot shadow a file of ours.
"""

import difflib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.errors import HydraException
from omegaconf import DictConfig

from dnagpt.utils.errors import ConfigError
from dnagpt.utils.resolvers import register_resolvers

CONF_MODULE = "dnagpt.conf"
CONF_PATH = f"pkg://{CONF_MODULE}"  # the config_path of every command's @hydra.main


def hydra_command(config_name: str, run: Callable[[DictConfig], object]) -> Callable[[], None]:
    """The ``main()`` of a command that is one Hydra app over ``dnagpt/conf/<config_name>.yaml`` (embed, predict, score
    variants): the resolvers registered before Hydra composes, then ``run(cfg)`` in ``job_scope`` (a refused input
    exits with its paragraph; ``-m`` jobs are isolated), as ``dnagpt train`` does."""

    @hydra.main(version_base="1.3", config_path=CONF_PATH, config_name=config_name)
    def app(cfg: DictConfig) -> None:
        from dnagpt.utils.multirun import job_scope  # torch-heavy: only once the config is composed

        with job_scope():
            run(cfg)

    def main() -> None:
        register_resolvers()
        app()

    return main


@contextmanager
def _configs(config_dir: str | Path | None) -> Iterator[None]:
    """Hydra's compose context over our packaged configs, or over ``config_dir`` instead (tests' reduced configs)."""
    if config_dir is None:
        with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
            yield
    else:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            yield


def searchpath_override(user_dir: str | Path | None) -> list[str]:
    """The override that adds ``user_dir`` after our configs, where Hydra's ``--config-dir`` puts it."""
    if user_dir is None:
        return []
    quoted = str(Path(user_dir).resolve()).replace("\\", "\\\\").replace("'", "\\'")
    return [f"hydra.searchpath=['file://{quoted}']"]


def program_name() -> str:
    """How this process was started, for messages: ``python train.py`` or ``dnagpt-train`` (``sys.argv[0]``)."""
    script = Path(sys.argv[0])
    return f"python {script.name}" if script.suffix == ".py" else script.name


def check_config_dir(user_dir: str | Path | None, prog: str) -> None:
    """A ``--config-dir`` that is not a folder is refused here: Hydra's own report spans several lines."""
    if user_dir is not None and not Path(user_dir).is_dir():
        raise ConfigError(
            f"{prog} --config-dir {user_dir}: no such folder ({Path(user_dir).resolve()}); it holds your own config "
            "groups as sub-folders, e.g. experiment/my_run.yaml, used as experiment=my_run"
        )


def config_groups(
    config_name: str = "train", user_dir: str | Path | None = None, config_dir: str | Path | None = None
) -> dict[str, list[str]]:
    """Every config group (``hydra/`` aside) and its options, ours and those of ``user_dir``: what ``--help`` lists."""
    with _configs(config_dir):
        loader = GlobalHydra.instance().config_loader()
        overrides = searchpath_override(user_dir)

        def options(group: str, kind: ObjectType) -> list[str]:
            return loader.get_group_options(group, kind, config_name=config_name, overrides=overrides)

        def walk(parent: str) -> Iterator[tuple[str, list[str]]]:
            for name in options(parent, ObjectType.GROUP):
                group = f"{parent}/{name}" if parent else name
                if group != "hydra" and not name.startswith("__"):
                    if choices := options(group, ObjectType.CONFIG):
                        yield group, choices
                    yield from walk(group)

        return dict(sorted(walk("")))


def format_groups(groups: dict[str, list[str]]) -> str:
    """``  corpus: bundled, human, ...``, one line per group."""
    return "".join(f"  {group}: {', '.join(choices)}\n" for group, choices in groups.items())


def one_line(err: HydraException) -> str:
    """Hydra's message on one line, without its config search path, with the options of a config group it names."""
    message = " ".join(str(err).split("\nAvailable options")[0].split("\nConfig search path")[0].split())
    options = getattr(err, "options", None)
    return f"{message}; available: {', '.join(options)}" if options else message


def compose_config(
    overrides: Sequence[str],
    config_name: str = "train",
    *,
    user_dir: str | Path | None = None,
    config_dir: str | Path | None = None,
    prog: str = "python download.py",
    echo: Sequence[str] | None = None,
) -> DictConfig:
    """The config ``prog overrides`` runs with, composed without a run (no output directory, no logging set-up).

    ``user_dir`` is the user's ``--config-dir``; ``config_dir`` replaces our configs (tests). A bad override is a
    ``ConfigError`` of one line naming the command line (``prog`` and ``echo``, by default the overrides) and what is
    wrong: for an unknown option of a config group its options, for an unknown key without a dot (``corpsu=bundled``)
    the config groups of a similar name.
    """
    register_resolvers()
    overrides = list(overrides)
    with _configs(config_dir):
        try:
            return compose(config_name=config_name, overrides=[*searchpath_override(user_dir), *overrides])
        except HydraException as err:
            error = err
    message = one_line(error)
    if message.startswith("Could not override '") and "." not in (key := message.split("'")[1]):
        groups = [g for g in config_groups(config_name, user_dir, config_dir) if "/" not in g]
        if close := difflib.get_close_matches(key.lstrip("+~"), groups, n=3):
            message += f"; did you mean the config group {' or '.join(close)}? (groups: {', '.join(groups)})"
    raise ConfigError(f"{prog} {' '.join(overrides if echo is None else echo)}: {message}") from None
