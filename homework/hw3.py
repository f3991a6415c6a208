"""HW3: food-11 image classification with CNNs trained from scratch (pretrained weights are not allowed).

    python homework/hw3.py fit                                   # default recipe: ResNet-18, augmentation
    python homework/hw3.py fit --config homework/configs/hw3_sample.yaml   # the official sample CNN
    python homework/hw3.py fit --config homework/configs/hw3_strong.yaml   # + MixUp/CutMix, longer
    python homework/hw3.py predict --ckpt_path best --data.tta_views 4     # submission.csv, with TTA
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.food import FoodDataModule
from homework.cli.api import Homework
from models.classifier import ImageClassifier


#: what makes HW3: its task, its data, its recipe and the options one of them sets for the other
HOMEWORK = Homework(ImageClassifier, FoodDataModule, "hw3.yaml",
                    links={"data.num_classes": "model.num_classes", "data.image_size": "model.image_size"})

main = HOMEWORK.main  # the command line: `python homework/hw3.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw3; result = hw3.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
