"""The one base class for errors a user can cause and fix (bad config, missing dataset, unusable
checkpoint). The launcher reports these as a single line and exits non-zero; anything else is a bug
and keeps its traceback."""


class UserError(Exception):
    """An error whose message is one line naming the problem and the fix."""


# Exit codes of `launch.py` beyond 0 (success), 1 (a bug: traceback) and 2 (a UserError):
# schedulers and the sweep runners read them to tell a run to retry from one to give up on.
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3  # a non-finite loss or gradient norm stopped training (config.on_nonfinite)
# Stopped by SIGTERM/SIGINT or config.max_runtime after writing a checkpoint: rerun the same
# command to resume. 75 is EX_TEMPFAIL of sysexits.h ("try again later").
EXIT_PREEMPTED = 75
