"""Errors that stop a stage before it runs: the CLI reports them and exits with code 2.

Each says what is wrong and how to fix it (the setting to change, the package to install);
`marionette up` stops every stage on one, since restarting would only repeat it.
"""


class StageStartError(Exception):
    """A stage cannot start as configured."""


class ConfigError(StageStartError, ValueError):
    """A setting has a bad value; the message names the setting and how to fix it."""
