"""Where a training job runs: a local process (the default) or a Ray Job on a cluster.

:class:`bot.jobs.JobRunner` keeps the queue, the database and the listeners and talks to a
:class:`~bot.launchers.base.Launcher` only through its small protocol (start, the output lines,
wait, stop, re-attach), so the queue logic is written once for both.
"""

from bot.launchers.base import Attempt, Launcher, LauncherUnavailable, Outcome

__all__ = ["Attempt", "Launcher", "LauncherUnavailable", "Outcome"]
