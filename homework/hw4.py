"""HW4: speaker identification (600 VoxCeleb speakers) from mel spectrograms with self-attention.

    python homework/hw4.py fit                                   # Conformer, attention pooling, AM-Softmax
    python homework/hw4.py fit --config homework/configs/hw4_sample.yaml   # the official sample
    python homework/hw4.py fit --model.head linear --model.pooling mean    # parts of the recipe by flag
    python homework/hw4.py predict --ckpt_path best              # writes output.csv for Kaggle
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.voxceleb import VoxCelebDataModule
from homework.cli.api import Homework
from models.speaker import SpeakerClassifier


#: what makes HW4: its task, its data, its recipe and the options one of them sets for the other
HOMEWORK = Homework(SpeakerClassifier, VoxCelebDataModule, "hw4.yaml",
                    links={"data.num_speakers": "model.num_speakers", "data.n_mels": "model.n_mels"})

main = HOMEWORK.main  # the command line: `python homework/hw4.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw4; result = hw4.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
