"""LightningDataModules, one per homework, over shared machinery in `datamodules.base`.

Importing the package loads nothing: `datamodules.errors`, the leaf every layer raises from, stays light
(`python -X importtime -c "import datamodules.errors"`: milliseconds, no torch; tests/test_layers.py)."""
