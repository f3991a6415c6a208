"""HW1: COVID-19 cases prediction (regression on the Delphi survey CSVs).

    python homework/hw1.py fit                                   # default recipe
    python homework/hw1.py fit --config homework/configs/hw1_sample.yaml   # the official sample recipe
    python homework/hw1.py predict --ckpt_path best              # writes pred.csv for Kaggle
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.covid import CovidDataModule
from homework.cli.api import Homework
from models.regression import CovidRegressor


#: what makes HW1: its task, its data, its recipe and the options one of them sets for the other
HOMEWORK = Homework(CovidRegressor, CovidDataModule, "hw1.yaml",
                    links={"data.num_features": "model.in_features",
                           "data.minibatches_per_step": "model.minibatches_per_step"})

main = HOMEWORK.main  # the command line: `python homework/hw1.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw1; result = hw1.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
