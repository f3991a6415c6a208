"""The command every homework shares (`python homework/hwN.py COMMAND ...`): parsing and its one-line errors
(arguments.py), what a command prints (output.py), settings that depend on the machine (hardware.py), and
LightningCLI with this project's defaults, which runs each command (main.py). See docs/architecture.md."""
