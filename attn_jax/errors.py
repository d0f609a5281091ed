"""The one base class for errors a user can cause and fix (bad config, missing dataset, unusable
checkpoint). The launcher reports these as a single line and exits non-zero; anything else is a bug
and keeps its traceback."""


class UserError(Exception):
    """An error whose message is one line naming the problem and the fix."""
