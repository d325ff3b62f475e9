"""hsm: parameter sweeps on every machine you can reach."""

__version__ = "0.1.0"
