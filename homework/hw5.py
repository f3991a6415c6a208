"""HW5: English -> Chinese machine translation (TED2020 in the course; any corpus in its layout).

    python homework/hw5.py fit                                        # default recipe: Transformer
    python homework/hw5.py fit --config homework/configs/hw5_sample.yaml   # the course's RNN sample
    python homework/hw5.py predict --ckpt_path best                   # prediction.txt, beam search
    python homework/hw5.py test --ckpt_path best                      # BLEU, when test.raw.zh has references
    python homework/hw5.py predict --ckpt_path best --data.data_dir DIR   # translate DIR/test.raw.en
"""
from pytorch_lightning.cli import ArgsType

from datamodules.translation import TranslationDataModule
from homework.cli.main import HomeworkCLI, run
from models.translation import Translator


def main(args: ArgsType = None) -> HomeworkCLI:
    return run(Translator, TranslationDataModule, "hw5.yaml", args=args,
               links={"data.vocab_size": "model.vocab_size"})


if __name__ == "__main__":
    main()
