"""HW13: network compression on food-11 (ML2022 and ML2023 `food11-hw13/`, and HW3's own folders).

HW3's image pipeline (food.py: each JPEG decoded once into a uint8 cache, augmentation on small tensors), decoded
as the HW13 sample does (Resize(256) + CenterCrop(224): the teacher's view), at the larger of the student's and the
teacher's sizes. Each training batch is augmented once; the student and the teacher each get their own view of it
(resized on the device), so a student trained at 128 px still learns from a teacher that sees 224 px.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms import v2

from datamodules.errors import DataError
from datamodules.food import FoodDataModule, FoodFiles, FoodLayout, list_images, match_layout
from datamodules.food_demo import write_demo_food
from datamodules.lab_hooks import ReferenceScore

#: The course's layout: `food11-hw13/{training,validation,evaluation}`, Ids 0000.. in sorted-name order (both years).
ML2022 = FoodLayout("ml2022hw13", "training", "validation", "evaluation", False, 0, 4, "ml2022spring-hw13")
ML2023 = FoodLayout("ml2023hw13", "training", "validation", "evaluation", False, 0, 4, "ml2023spring-hw13")
#: The two years share folder names; ML2022's evaluation split has 3,347 images (ML2023's: 2,218).
ML2022_TEST_IMAGES = 3347
#: The student's parameter budget (torchsummary's "Total params"), by year; HW3's folders: the stricter ML2023's.
BUDGETS = {"ml2022hw13": 100_000}
DEFAULT_BUDGET = 60_000
TEACHER_FILE = "resnet18_teacher.ckpt"
DEMO_ROOT = "food11-hw13"


@dataclass(frozen=True)
class CompressionFiles(FoodFiles):
    teacher_file: Path | None = None  # resnet18_teacher.ckpt beside the splits, when there


def match_hw13(root: Path) -> FoodLayout | None:
    """ML2022's or ML2023's HW13 layout in `root` (told apart by the size of the evaluation split), or None."""
    folders = [root / d for d in (ML2023.train, ML2023.valid, ML2023.test)]
    if not all(f.is_dir() for f in folders):
        present = [f.name + "/" for f in folders if f.is_dir()]
        if ML2023.test + "/" in present and len(present) == 2:
            missing = next(f.name for f in folders if not f.is_dir())
            raise DataError(f"{root}: looks like the HW13 food-11 layout ({', '.join(present)}) but {missing}/ "
                            f"is missing")
        return None
    return ML2022 if len(list_images(folders[2])) == ML2022_TEST_IMAGES else ML2023


class CompressionDataModule(FoodDataModule):
    """Food-11 for a small student and its teacher: HW3's DataModule (every augmentation option is HW3's) with the
    HW13 layout, the sample's 224-px center crop, and a teacher's view of each training batch.

    `image_size=None` is 224 px (the sample's) on food-11 and 32 px on the demo digits; `teacher_image_size=None`
    is the course teacher's 224 px (the demo teacher's 32 px). Images are decoded once at the larger of the two.

    Args:
        data_dir: Folder with food11-hw13/ (training, validation, evaluation) or HW3's folders. None: data/hw13,
            else a demo set.
        image_size: The student's resolution in pixels; None: 224 on food-11, 32 on the demo digits.
        teacher_image_size: The resolution the teacher was trained at; None: 224 (the course's teacher), 32 on the demo.
        **kwargs: HW3's options (`FoodDataModule`: batch size, workers, augmentation, test-time augmentation, cache).
    """

    homework = "hw13"
    kaggle_competition = "ml2023spring-hw13"
    expected_files = (f"food11-hw13/training|validation|evaluation/ (ML2022, ML2023; with {TEACHER_FILE}) "
                      f"or HW3's food-11 folders")
    default_image_size, demo_image_size = 224, 32
    decode_crop = 224 / 256  # the sample's Resize(256) + CenterCrop(224): what the course's teacher was trained on

    def __init__(self, data_dir: str | None = None, image_size: int | None = None,
                 teacher_image_size: int | None = None, **kwargs) -> None:
        for name, size in (("image_size", image_size), ("teacher_image_size", teacher_image_size)):
            if size is not None and size < 16:
                raise DataError(f"--data.{name} must be at least 16 pixels (got {size})")
        self._teacher_size = teacher_image_size  # (read by cache_size while HW3's __init__ builds the augmentation)
        super().__init__(data_dir, image_size, **kwargs)
        self.teacher_image_size = self.teacher_size
        self.save_hyperparameters({"teacher_image_size": self.teacher_image_size})
        self.max_params = BUDGETS.get(self.layout.name, DEFAULT_BUDGET)
        #: Set by the model while it distils (the size its teacher was trained at): training batches then carry a
        #: teacher's view; `teacher_reference` is the teacher's validation accuracy once the model measured it.
        self.teacher_view: int | None = None
        self.teacher_reference: ReferenceScore | None = None

    @property
    def teacher_size(self) -> int:
        return self._teacher_size or (self.demo_image_size if self.is_demo else self.default_image_size)

    @property
    def cache_size(self) -> int:
        return max(self.image_size, self.teacher_size)

    @property
    def from_data(self) -> dict:
        """What the data decides for the student's task (the CLI links it to `model.from_data`, so the model checks
        its budget and loads its teacher before any image is decoded): the year's budget, the course's teacher file
        beside the data, and the size that teacher was trained at."""
        teacher = self.files.teacher_file
        if teacher is None and self.is_demo:  # made from the demo images by the first fit that needs it
            teacher = self.files.root / TEACHER_FILE
        return {"max_params": self.max_params, "year": self.year, "teacher_image_size": self.teacher_image_size,
                "teacher_file": str(teacher) if teacher else None, "demo": self.is_demo}

    @property
    def year(self) -> str:
        """The course year of the data's layout, for the budget line: ML2022, ML2023 or HW3's folders."""
        return {"ml2022hw13": "ML2022", "ml2023hw13": "ML2023"}.get(self.layout.name, "ML2023 (HW3's folders)")

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> CompressionFiles | None:
        layout = match_hw13(directory) or match_layout(directory)
        if layout is None:
            return None
        teacher = directory / TEACHER_FILE
        return CompressionFiles(layout, directory, teacher if teacher.is_file() else None)

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        """HW3's demo digits in the HW13 layout. Its teacher (TEACHER_FILE beside them) is trained by the first fit
        that needs one (models/demo_teacher.py), so a fit with cross entropy alone never waits for it."""
        write_demo_food(directory, root=DEMO_ROOT, splits=(ML2023.train, ML2023.valid, ML2023.test), first_id=0)

    # --- the student's and the teacher's views ------------------------------------------------
    def prepare_batch(self, batch, train: bool = False):
        """HW3's (normalize; MixUp/CutMix while training) at the cache's size, then the student's view; while a
        teacher teaches, training batches are (student view, labels, teacher view) of the same augmented images."""
        prepared = super().prepare_batch(batch, train)
        images, labels = (prepared, None) if isinstance(prepared, torch.Tensor) else prepared
        student = self.view(images, self.image_size)
        if labels is None:
            return student
        if train and self.teacher_view is not None:
            return student, labels, self.view(images, self.teacher_view)
        return student, labels

    def teacher_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A validation batch (on the device) as the teacher sees it: (teacher view, labels)."""
        images, labels = super().prepare_batch(batch, train=False)
        return self.view(images, self.teacher_view or self.teacher_size), labels

    @staticmethod
    def view(images: torch.Tensor, size: int) -> torch.Tensor:
        if images.shape[-1] == size and images.shape[-2] == size:
            return images
        return v2.functional.resize(images, [size, size], antialias=True)

    def reference_score(self, max_samples: int) -> ReferenceScore | None:
        """The teacher's validation accuracy, the student's ceiling (known once a distilling fit measured it)."""
        return self.teacher_reference
