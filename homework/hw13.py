"""HW13: network compression: a food-11 student within the parameter budget, taught by a teacher
(knowledge distillation).

    python homework/hw13.py fit                                    # default: depthwise + pointwise student, KD
    python homework/hw13.py fit --config homework/configs/hw13_sample.yaml   # the sample StudentNet, CE only
    python homework/hw13.py fit --model.teacher runs/hw3/<run>     # distil your own HW3 model
    python homework/hw13.py predict --ckpt_path best               # submission.csv (the teacher is not needed)
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.compression import CompressionDataModule
from homework.cli.api import Homework
from models.distillation import Student


#: what makes HW13: its task, its data, its recipe and the options one of them sets for the other
HOMEWORK = Homework(Student, CompressionDataModule, "hw13.yaml",
                    links={"data.num_classes": "model.num_classes", "data.image_size": "model.image_size",
                           "data.from_data": "model.from_data"})

main = HOMEWORK.main  # the command line: `python homework/hw13.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw13; result = hw13.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
