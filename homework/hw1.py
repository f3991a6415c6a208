"""HW1: COVID-19 cases prediction (regression on the Delphi survey CSVs).

    python homework/hw1.py fit                                   # default recipe
    python homework/hw1.py fit --config homework/configs/hw1_sample.yaml   # the official sample recipe
    python homework/hw1.py predict --ckpt_path best              # writes pred.csv for Kaggle
"""
from pytorch_lightning.cli import ArgsType

from datamodules.covid import CovidDataModule
from homework.cli.main import HomeworkCLI, run
from models.regression import CovidRegressor


def main(args: ArgsType = None) -> HomeworkCLI:
    return run(CovidRegressor, CovidDataModule, "hw1.yaml", args=args,
               links={"data.num_features": "model.in_features",
                      "data.minibatches_per_step": "model.minibatches_per_step"})


if __name__ == "__main__":
    main()
