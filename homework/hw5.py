"""HW5: English -> Chinese machine translation (TED2020 in the course; any corpus in its layout).

    python homework/hw5.py fit                                        # default recipe: Transformer
    python homework/hw5.py fit --config homework/configs/hw5_sample.yaml   # the course's RNN sample
    python homework/hw5.py predict --ckpt_path best                   # prediction.txt, beam search
    python homework/hw5.py test --ckpt_path best                      # BLEU, when test.raw.zh has references
    python homework/hw5.py predict --ckpt_path best --data.data_dir DIR   # translate DIR/test.raw.en
"""
if not __package__:  # `python homework/hwN.py` in a checkout not installed with pip: the project is the folder above
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import homework.cli.startup  # noqa: F401  first: a Ctrl-C while the rest loads ends in one line

from datamodules.translation import TranslationDataModule
from homework.cli.api import Homework
from models.translation import Translator


#: what makes HW5: its task, its data, its recipe and the options one of them sets for the other
HOMEWORK = Homework(Translator, TranslationDataModule, "hw5.yaml",
                    links={"data.vocab_size": "model.vocab_size"})

main = HOMEWORK.main  # the command line: `python homework/hw5.py ARGS`

# the Python API (docs/notebooks.md): `from homework import hw5; result = hw5.fit(max_epochs=3)`
fit, validate, test, predict, critical, compare, diagnose = HOMEWORK.commands()


if __name__ == "__main__":
    main()
