"""OmegaConf resolvers used by the configs.

Only one, and it is pure: ``${dnagpt.resources:NAME}`` is the absolute path of ``dnagpt/resources/NAME``, the real data
excerpts shipped inside the package. Configs can then name bundled files without a project-root environment variable and
whatever directory a run is launched from.
"""

from pathlib import Path

from omegaconf import OmegaConf

RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"


def resource_path(name: str = "") -> str:
    """Absolute path of a bundled resource (it need not exist: the caller reports a missing file with context).

    >>> resource_path("bundled").endswith("dnagpt/resources/bundled")
    True
    """
    return str(RESOURCES_DIR / name) if name else str(RESOURCES_DIR)


def register_resolvers() -> None:
    """Idempotent, so every entry point and test may call it."""
    if not OmegaConf.has_resolver("dnagpt.resources"):
        OmegaConf.register_new_resolver("dnagpt.resources", resource_path)
