"""What a homework command does before it loads torch, Lightning and the homework's code (several seconds).

An entry point imports this module first. Until its `Homework` is made (all imports done), a Ctrl-C ends in one
line instead of Python's traceback through torch's import machinery; the process then ends as Python ends one
interrupted by Ctrl-C (by SIGINT: a shell shows exit code 130). After that, the command's own handling takes over
(`main.run`: what was kept, exit code 130).
"""
import sys

_before = sys.excepthook


def _one_line(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.stdout.flush()
        print("Interrupted (Ctrl-C) while starting; nothing was written", file=sys.stderr)
    else:
        _before(kind, value, traceback)


def loaded() -> None:
    """Everything is imported: Python's own handling of an uncaught exception is back."""
    if sys.excepthook is _one_line:
        sys.excepthook = _before


sys.excepthook = _one_line
