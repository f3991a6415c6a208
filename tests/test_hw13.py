"""HW13 on tiny generated data: the parameter count against torchsummary's, the budget line and its refusal, each
teacher source (the course's state dict, an HW3 run, the demo teacher), wrong teacher files, the KD loss against a
hand-computed value, the teacher's own view of a batch, and predict from the student's checkpoint alone."""
import contextlib
import functools
import inspect
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchsummary
import torchvision
import yaml

from datamodules import compression
from datamodules.compression import ML2022, ML2023, TEACHER_FILE, CompressionDataModule
from datamodules.errors import DataError
from datamodules.food import FoodDataModule
from datamodules.food_demo import write_demo_food
from homework import hw3, registry
from homework.hw13 import main
from models import demo_teacher
from models.students import STUDENTS, DwpwNet, StudentNet, build_student, kd_loss, summary_params
from models.teacher import load_teacher
from tests.conftest import QUIET, user_error

TINY = [*registry.tiny("hw13"), *QUIET]
#: the tiny sets' splits: 2 training, 1 validation and 1 test image per class (11 classes)
PER_CLASS = (2, 1, 1)


def make_hw13(parent: Path, teacher: torch.nn.Module | None = None) -> Path:
    """A tiny food11-hw13 set (the course's layout), with a ResNet-18 state dict beside it when `teacher` is given."""
    write_demo_food(parent, per_class=PER_CLASS, root="food11-hw13", splits=("training", "validation", "evaluation"),
                    first_id=0)
    root = parent / "food11-hw13"
    if teacher is not None:
        torch.save(teacher.state_dict(), root / TEACHER_FILE)
    return root


def resnet18(num_classes: int = 11) -> torch.nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def torchsummary_total(net: torch.nn.Module) -> int:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        torchsummary.summary(net, (3, 224, 224), device="cpu")
    line = next(line for line in out.getvalue().splitlines() if line.startswith("Total params"))
    return int(line.split(":")[1].replace(",", ""))


# --- the budget ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", STUDENTS)
def test_parameter_count_is_torchsummarys(name):
    net = build_student(name, 11)
    assert summary_params(net) == torchsummary_total(net)


def test_sample_student_nets_are_the_samples():
    """The sample StudentNets' counts as the course's notebooks give them: within 60,000 (2023) and 100,000 (2022)."""
    assert summary_params(StudentNet(11, 2023)) == 59_723
    assert summary_params(StudentNet(11, 2022)) == 87_907
    assert summary_params(DwpwNet(11)) <= 60_000


def test_count_follows_torchsummary_where_it_differs_from_numel():
    """torchsummary counts a module once per call and skips the network's own direct parameters: so does the count."""
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))  # the network's own: torchsummary does not count it
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.fc = torch.nn.Linear(3, 11)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)) * self.scale)

    net = Twice()
    assert summary_params(net) == torchsummary_total(net) == 2 * 84 + 44


def tiny_data(tmp_path) -> list[str]:
    """A 77-image set instead of the 1,870-image demo (written in seconds on a busy CPU), for the tests about
    something else than the demo set."""
    return ["--data.data_dir", str(make_hw13(tmp_path / "data"))]


def test_budget_printed_and_recorded(tmp_path, caplog):
    with caplog.at_level("INFO"):
        main(["fit", *TINY, *tiny_data(tmp_path)])
    assert "16,079 parameters (torchsummary's Total params at 3x224x224); the ML2023 budget: 60,000" in caplog.text
    record = json.loads(next(Path("runs/hw13").glob("*/run.json")).read_text())
    count = summary_params(build_student("dwpw", 11, 0.5))
    assert (record["student_parameters"], record["max_params"], record["loss_fn_type"]) == (count, 60_000, "CE")
    assert record["parameters"] == count  # the advisor's size comparison counts the student, not a teacher


def test_over_budget_stops_before_training(tmp_path, capsys):
    data = tiny_data(tmp_path)
    line = user_error(capsys, main, ["fit", *TINY, *data, "--model.width", "2.0"])
    assert "210,203 parameters" in line and "ML2023 budget of 60,000" in line and "--model.max_params" in line
    line = user_error(capsys, main, ["fit", *TINY, *data, "--model.max_params", "10000"])
    assert "16,079 parameters" in line and "--model.max_params of 10,000" in line


def test_year_from_the_evaluation_split(tmp_path):
    """ML2022 and ML2023 share folder names: ML2022's 3,347 evaluation images give its 100,000 budget."""
    for split in ("training", "validation"):
        (tmp_path / split).mkdir()
    (tmp_path / "evaluation").mkdir()
    for i in range(compression.ML2022_TEST_IMAGES):
        (tmp_path / "evaluation" / f"{i:04d}.jpg").touch()
    assert compression.match_hw13(tmp_path) is ML2022
    (tmp_path / "evaluation" / "0000.jpg").unlink()
    assert compression.match_hw13(tmp_path) is ML2023
    assert compression.BUDGETS.get(ML2022.name) == 100_000


def test_missing_split_is_one_line(tmp_path, capsys):
    root = make_hw13(tmp_path / "data")
    for file in (root / "validation").iterdir():
        file.unlink()
    (root / "validation").rmdir()
    line = user_error(capsys, main, ["fit", *TINY, "--data.data_dir", str(root)])
    assert "HW13 food-11 layout" in line and "validation/ is missing" in line


# --- knowledge distillation ------------------------------------------------------------------------
def test_kd_loss_against_hand_computed():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    alpha, t = 0.3, 2.0
    expected_kl, expected_ce = 0.0, 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), labels.tolist()):
        p_t = [math.exp(v / t) / sum(math.exp(w / t) for w in t_row) for v in t_row]
        p_s = [math.exp(v / t) / sum(math.exp(w / t) for w in s_row) for v in s_row]
        expected_kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s)) / 2
        expected_ce += -math.log(math.exp(s_row[y]) / sum(math.exp(w) for w in s_row)) / 2
    expected = alpha * t * t * expected_kl + (1 - alpha) * expected_ce
    assert kd_loss(student, labels, teacher, alpha, t).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(student, labels, teacher, 0.0, t).item() == pytest.approx(expected_ce, rel=1e-6)


def test_course_teacher_beside_the_data_distils(tmp_path, caplog):
    """The course's resnet18_teacher.ckpt found beside the data; the student's batches carry the teacher's own view
    (its size), its logits have no gradients and it is never trained; predict needs only the student's checkpoint."""
    teacher = resnet18()
    root = make_hw13(tmp_path / "data", teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen = []

    def spy(self, images, labels, teacher_images):
        seen.append((images.shape[-1], None if teacher_images is None else teacher_images.shape[-1],
                     self._teacher.net.training, torch.is_grad_enabled()))
        return original(self, images, labels, teacher_images)

    from models.distillation import Student
    original = Student.distillation_loss
    Student.distillation_loss = spy
    try:
        with caplog.at_level("INFO"):
            main(["fit", *TINY, "--data.data_dir", str(root), "--model.loss_fn_type", "KD",
                  "--data.teacher_image_size", "24"])
    finally:
        Student.distillation_loss = original
    assert seen and all(s == (16, 24, False, True) for s in seen)
    assert "Teacher: ResNet-18" in caplog.text and "validation accuracy" in caplog.text
    run = next(Path("runs/hw13").iterdir())
    checkpoint = torch.load(next(run.glob("checkpoints/best*.ckpt")), weights_only=True)
    assert not any(key.startswith(("teacher", "_teacher")) for key in checkpoint["state_dict"])
    (root / TEACHER_FILE).unlink()  # predict needs the student alone
    main(["predict", "--ckpt_path", str(run), *QUIET])
    submission = pd.read_csv(run / "submission.csv", dtype=str)
    assert list(submission.columns) == ["Id", "Category"] and len(submission) == 11
    assert submission["Id"].iloc[0] == "0000"
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_teacher_from_an_hw3_run(tmp_path, caplog):
    """`--model.teacher runs/hw3/<run>`: HW3's best checkpoint (its own net and image size), on HW3's folders."""
    write_demo_food(tmp_path / "hw3data", per_class=PER_CLASS)
    data = str(tmp_path / "hw3data")
    hw3.main(["fit", "--data.data_dir", data, "--model.net", "sample", *registry.tiny("hw3"), *QUIET])
    hw3_run = next(Path("runs/hw3").iterdir())
    with caplog.at_level("INFO"):
        main(["fit", *TINY, "--data.data_dir", data, "--model.loss_fn_type", "FitNet", "--model.teacher", str(hw3_run),
              "--data.teacher_image_size", "32"])  # (HW3's tiny run trained at 32 px: no 224-px cache to decode)
    assert "Teacher: HW3's sample" in caplog.text and "32 px" in caplog.text
    run = next(Path("runs/hw13").iterdir())
    main(["validate", "--ckpt_path", str(run), *QUIET])  # FitNet's adapter is not needed to use the student


def test_demo_teacher_made_once_by_the_first_distilling_fit(monkeypatch, caplog):
    """On the demo set, the first KD fit trains a ResNet-18 teacher from the demo images (saved as the course's file
    beside them, a state dict); fits after it reuse it. (Tiny demo set and one epoch: the path, not the accuracy.)"""
    monkeypatch.setattr(compression, "write_demo_food", functools.partial(write_demo_food, per_class=PER_CLASS))
    monkeypatch.setattr(demo_teacher, "EPOCHS", 1)
    with caplog.at_level("INFO"):
        main(["fit", *TINY, "--model.loss_fn_type", "KD"])
        main(["fit", *TINY, "--model.loss_fn_type", "KD"])
    assert caplog.text.count("Training the demo teacher once") == 1
    saved = Path("data/hw13-demo/food11-hw13") / TEACHER_FILE
    assert set(torch.load(saved, weights_only=True)) == set(resnet18().state_dict())


def test_no_teacher_for_kd_is_one_line(tmp_path, capsys):
    root = make_hw13(tmp_path / "data")
    line = user_error(capsys, main, ["fit", *TINY, "--data.data_dir", str(root), "--model.loss_fn_type", "KD"])
    assert "needs a teacher" in line and TEACHER_FILE in line


@pytest.mark.parametrize("content, expected", [
    ("text", "not a PyTorch state dict or checkpoint"),
    ("tensor", "holds a Tensor, not a state dict"),
    ("resnet34", "not a torchvision ResNet-18 state dict"),
    ("ten_classes", "a classifier of 10 classes; the teacher must have 11"),
])
def test_wrong_teacher_file(tmp_path, content, expected):
    path = tmp_path / "teacher.ckpt"
    if content == "text":
        path.write_text("not a checkpoint")
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "resnet34":
        torch.save(torchvision.models.resnet34(weights=None, num_classes=11).state_dict(), path)
    else:
        torch.save(resnet18(10).state_dict(), path)
    with pytest.raises(DataError, match=expected) as error:
        load_teacher(path, 11, 224)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_wrong_teacher_file_on_the_command_line(tmp_path, capsys):
    bad = tmp_path / "teacher.ckpt"
    torch.save(resnet18(10).state_dict(), bad)
    line = user_error(capsys, main, ["fit", *TINY, *tiny_data(tmp_path), "--model.loss_fn_type", "KD",
                                     "--model.teacher", str(bad)])
    assert line == f"error: {bad}: a classifier of 10 classes; the teacher must have 11"


def test_teacher_view_of_the_same_batch(tmp_path):
    """One augmented batch, two sizes: the student's view and the teacher's are the same pictures."""
    root = make_hw13(tmp_path / "data")
    dm = CompressionDataModule(str(root), image_size=16, teacher_image_size=32, num_workers=0)
    assert dm.cache_size == 32
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(4)
    assert len(dm.prepare_batch((images, labels), train=True)) == 2  # no teacher teaching: no teacher's view
    dm.teacher_view = 32
    student, _, teacher = dm.prepare_batch((images, labels), train=True)
    assert student.shape[-1] == 16 and teacher.shape[-1] == 32
    assert torch.allclose(student, torch.nn.functional.interpolate(teacher, size=16, mode="bilinear",
                                                                   antialias=True), atol=1e-4)


def test_compare_knows_the_losses(capsys):
    """`compare --losses CE,KD,FitNet`: HW13's own kind of variant (the task's `variants`), checked before any fit."""
    from homework.lab.compare import variant_flags
    from models.distillation import Student

    assert variant_flags("--losses", "KD", None, 1, Student.variants) == ["--model.loss_fn_type", "KD"]
    line = user_error(capsys, main, ["compare", "--losses", "CE,XD", *TINY])
    assert "--losses: unknown variant 'XD'; choose from CE,KD,FitNet" in line


def test_every_hw3_data_option_is_hw13s_with_hw3s_default_and_help(capsys):
    """CompressionDataModule takes HW3's options through **kwargs (one declaration, in food.py): jsonargparse
    still lists each one under --data with HW3's default and help, and a value given on the line reaches HW3."""
    with pytest.raises(SystemExit):
        main(["fit", "--data.hflip", "0.25", "--data.teacher_image_size", "48", "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    hw3 = {name: p.default for name, p in inspect.signature(FoodDataModule.__init__).parameters.items()
           if name != "self"}
    expected = {**hw3, "crop_scale": list(hw3["crop_scale"]), "hflip": 0.25, "teacher_image_size": 48}
    assert data == expected
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--data.random_erasing RANDOM_ERASING Probability of erasing a random rectangle." in help_text
    assert CompressionDataModule(hflip=0.25, random_erasing=0.5).hparams["random_erasing"] == 0.5


def test_a_fitnet_runs_recorded_size_is_the_students_not_its_adapters(tmp_path):
    """FitNet trains an adapter beside the student (a Linear onto the teacher's features); the size the advisor
    compares runs by is the student's, as for KD or CE (it counted the adapter: 2x the student here)."""
    root = make_hw13(tmp_path / "data", resnet18())
    cli = main(["fit", *TINY, "--data.data_dir", str(root), "--model.loss_fn_type", "FitNet",
                "--data.teacher_image_size", "24"])
    record = json.loads((cli.trainer.default_root_dir / Path("run.json")).read_text())
    assert record["parameters"] == record["student_parameters"] == cli.model.parameter_count
    assert sum(p.numel() for p in cli.model.parameters() if p.requires_grad) > record["parameters"]  # the adapter
