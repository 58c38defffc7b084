"""The Hydra configs, shipped inside the package so that an installed ``dnagpt`` finds them (``pkg://dnagpt.conf``)."""
