"""Errors a user can cause through the data config or the data dir; each message is one line that
names the thing and the fix, and the launcher prints it as such (they are `UserError`s)."""

from attn_jax.errors import UserError


class DataConfigError(UserError, ValueError):
    """A bad `config.data` value: unknown dataset, split or key, or a batch size that cannot be
    sharded over the processes."""


class DatasetNotFoundError(UserError):
    """A catalog dataset is not prepared as array_record in the data dir; the message names the
    dataset, the data dir and the command that prepares it."""
