"""HW4: speaker identification (600 VoxCeleb speakers) from mel spectrograms with self-attention.

    python homework/hw4.py fit                                   # Conformer, attention pooling, AM-Softmax
    python homework/hw4.py fit --config homework/configs/hw4_sample.yaml   # the official sample
    python homework/hw4.py fit --model.head linear --model.pooling mean    # parts of the recipe by flag
    python homework/hw4.py predict --ckpt_path best              # writes output.csv for Kaggle
"""
from pytorch_lightning.cli import ArgsType

from datamodules.voxceleb import VoxCelebDataModule
from homework.cli.main import HomeworkCLI, run
from models.speaker import SpeakerClassifier


def main(args: ArgsType = None) -> HomeworkCLI:
    return run(SpeakerClassifier, VoxCelebDataModule, "hw4.yaml", args=args,
               links={"data.num_speakers": "model.num_speakers", "data.n_mels": "model.n_mels"})


if __name__ == "__main__":
    main()
