"""HW2: frame-wise phoneme classification (libriphone MFCC frames; ML2021's timit_11 too).

    python homework/hw2.py fit                                   # default recipe: BiLSTM over 21-frame windows
    python homework/hw2.py fit --config homework/configs/hw2_sample.yaml   # the official sample MLP, 1 frame
    python homework/hw2.py fit --model.net mlp --data.concat_nframes 31     # a wide-window MLP instead
    python homework/hw2.py predict --ckpt_path best              # writes prediction.csv for Kaggle
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.libriphone import LibriPhoneDataModule
from homework.cli.api import Homework
from models.phoneme import PhonemeClassifier


#: what makes HW2: its task, its data, its recipe and the options one of them sets for the other
HOMEWORK = Homework(PhonemeClassifier, LibriPhoneDataModule, "hw2.yaml",
                    links={"data.num_classes": "model.num_classes", "data.feature_dim": "model.feature_dim",
                           "data.concat_nframes": "model.concat_nframes"})

main = HOMEWORK.main  # the command line: `python homework/hw2.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw2; result = hw2.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
