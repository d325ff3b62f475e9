"""Names the dead-code check (vulture, run by scripts/test) cannot see used.

Vulture reads this file with the code (nothing imports it): each line below uses a name that
something outside Python's sight reads. Keep it short; an entry says who reads the name.
Code that nothing reads is deleted, not listed here.
"""

# Each line only names something, for vulture to count it as used:
# ruff: noqa: B018

from vulture.whitelists.whitelist_utils import Whitelist

from hsm.jobscript import LAUNCH_FILE
from hydra_plugins.hsm_launcher.callback import SaveReturnValue
from hydra_plugins.hsm_launcher.launcher import HsmLauncher

_ = Whitelist()  # any attribute of it is itself

# Read by other libraries.
_.row_factory  # sqlite3: how the connection builds rows
_.model_config  # pydantic: a model's settings
_.connection_lost  # asyncssh: called when the connection drops
_.uid, _.gid, _.gname  # tarfile: the owner an extracted member gets
_.hydra_cfg  # Hydra: JobReturn's copy of the job's Hydra config
_.__getattr__  # Python: a module's lazy attributes (hsm's API, PEP 562)

# Hydra finds the plugin's classes through its config, and calls them with these
# keyword arguments.
HsmLauncher, SaveReturnValue.on_job_end
_.hydra_context, _.task_function, _.initial_job_idx

# Read by report.js from the report's JSON (the dataclasses' asdict()).
_.lane  # Bar
_.first_dispatch, _.last_result  # SourceStats

# Row fields that are the columns of their table, kept whole.
_.updated  # SweepRow
_.last_status  # SourceRow

# The task folder's layout: the file the SSH host scripts (shell) write.
LAUNCH_FILE
