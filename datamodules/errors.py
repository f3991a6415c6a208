"""The one exception for a user's mistake: a missing or malformed file, a bad option, a checkpoint that does not
fit. The command line prints it as one line, `error: ...`, and exits with code 2 (homework/cli/output.py); the
Python API raises it as `homework.cli.api.HomeworkError` (`from homework import HomeworkError`). It lives in a
leaf module, importing nothing of the project, so every layer can raise it (tests/test_layers.py)."""


class DataError(Exception):
    """A problem with the user's data, options or files, said in one line that names the file or option."""
