"""The one exception type for problems a user can cause and fix."""


class TvmcompError(Exception):
    """A problem with the user's input or environment.

    The message is written for the user: it names the problem and, where there is one, the fix.
    The CLI prints it on one line and exits with status 2.
    """
