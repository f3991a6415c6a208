"""HW8: anomaly detection on 64x64 faces: an autoencoder's reconstruction error as the anomaly score.

    python homework/hw8.py fit                                             # default recipe: a ResNet-style autoencoder
    python homework/hw8.py fit --config homework/configs/hw8_sample.yaml   # the course's sample (vae; fcn, cnn)
    python homework/hw8.py fit --model.classifier true                     # + the boss hint's extra classifier
    python homework/hw8.py predict --ckpt_path best                        # prediction.csv and anomalies.png
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.faces import FacesDataModule
from homework.cli.api import Homework
from models.anomaly import AnomalyDetector


#: what makes HW8: its task, its data and its recipe
HOMEWORK = Homework(AnomalyDetector, FacesDataModule, "hw8.yaml")

main = HOMEWORK.main  # the command line: `python homework/hw8.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw8; result = hw8.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
