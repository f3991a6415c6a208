"""HW3: food-11 image classification with CNNs trained from scratch (pretrained weights are not allowed).

    python homework/hw3.py fit                                   # default recipe: ResNet-18, augmentation
    python homework/hw3.py fit --config homework/configs/hw3_sample.yaml   # the official sample CNN
    python homework/hw3.py fit --config homework/configs/hw3_strong.yaml   # + MixUp/CutMix, longer
    python homework/hw3.py predict --ckpt_path best --data.tta_views 4     # submission.csv, with TTA
"""
from pytorch_lightning.cli import ArgsType

from datamodules.food import FoodDataModule
from homework.cli.main import HomeworkCLI, run
from models.classifier import ImageClassifier


def main(args: ArgsType = None) -> HomeworkCLI:
    return run(ImageClassifier, FoodDataModule, "hw3.yaml", args=args,
               links={"data.num_classes": "model.num_classes", "data.image_size": "model.image_size"})


if __name__ == "__main__":
    main()
