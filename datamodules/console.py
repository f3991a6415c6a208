"""Where the output goes: a terminal that redraws a progress bar, or a log or a notebook that keeps every line.

A notebook (Jupyter, Colab, VS Code) shows every `\\r` redraw of a tqdm bar as a new fragment, so there the
commands print one line per epoch, as when piped to a file. A command started from a notebook cell
(`!python homework/hw1.py fit`) often sees a terminal (IPython runs `!` commands on a pseudo-terminal, as does
Colab) and is told apart by what the kernel leaves in the environment of the processes it starts: Jupyter's
kernel launcher sets `JPY_PARENT_PID`, ipykernel sets `MPLBACKEND` to its inline backend, Colab sets
`COLAB_RELEASE_TAG`.
"""

import os
import sys

NOTEBOOK_BACKENDS = ("module://matplotlib_inline", "module://ipykernel.pylab")


def in_notebook() -> bool:
    """This process is a notebook's kernel, or was started from one."""
    env = os.environ
    if "COLAB_RELEASE_TAG" in env or "JPY_PARENT_PID" in env:
        return True
    if env.get("MPLBACKEND", "").startswith(NOTEBOOK_BACKENDS):
        return True
    return "ipykernel" in sys.modules and "IPython" in sys.modules and _kernel_running()


def _kernel_running() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def redraws() -> bool:
    """A redrawn progress bar reads well here: stderr is a terminal, and not a notebook's."""
    return sys.stderr.isatty() and not in_notebook()
