"""hsm's integration test bed: SSH hosts in network namespaces and a real Slurm on this machine.

Use :class:`TestBed` for SSH hosts and :class:`SlurmCluster` for Slurm, from pytest (see
``tests/testbed/fixtures.py``) or from the command line (``python -m tests.testbed up``).
Everything needs root.
"""

from ._util import TestBedError
from .hosts import Host, TestBed, cleanup_stale, pick_free_subnet
from .slurm import SlurmCluster

__all__ = ["Host", "SlurmCluster", "TestBed", "TestBedError", "cleanup_stale", "pick_free_subnet"]
