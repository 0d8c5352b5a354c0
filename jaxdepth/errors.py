"""The one exception type the command line turns into a one-line message (no traceback)."""


class UserError(ValueError):
    """Bad input from a user: a config key, a path, a shape. The message says what was
    wrong and what would be right; `jaxdepth` prints it as `error: ...` and exits 2."""
