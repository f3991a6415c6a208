"""HW11: domain adaptation, real photos (labelled) to hand drawings (unlabelled), with domain-adversarial
training (DaNN).

    python homework/hw11.py fit                                               # default: DANN lambda schedule,
                                                                              # augmentation
    python homework/hw11.py fit --config homework/configs/hw11_sample.yaml    # the course's sample: lambda 0.1
    python homework/hw11.py fit --model.lamb 0                                # source only: the same networks,
                                                                              # no adaptation
    python homework/hw11.py predict --ckpt_path best                          # submission.csv (id,label)
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.real_or_drawing import RealOrDrawingDataModule
from homework.cli.api import Homework
from models.domain_adaptation import DomainAdversarialClassifier


#: what makes HW11: its task, its data, its recipe and the options one of them sets for the other
HOMEWORK = Homework(DomainAdversarialClassifier, RealOrDrawingDataModule, "hw11.yaml",
                    links={"data.num_classes": "model.num_classes", "data.net_width": "model.width"})

main = HOMEWORK.main  # the command line: `python homework/hw11.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw11; result = hw11.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
