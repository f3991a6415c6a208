"""The homework contract, checked early: a homework's DataModule or task that lacks a member the shared code uses
fails where its class is defined (at import), naming the member, not at `predict` time; the submission writer
never ends a predict without a file or an error."""
import pytest
import torch

from callbacks.submission import KaggleSubmissionWriter, SubmissionError
from datamodules.base import HomeworkDataModule
from datamodules.covid import CovidDataModule
from models.base import BaseTask, ClassificationTask
from models.regression import CovidRegressor


def without(cls: type, *names: str) -> dict:
    """`cls`'s own members less `names`: the class body a homework would have written without them."""
    return {k: v for k, v in vars(cls).items() if k not in (*names, "__dict__", "__weakref__")}


def test_a_datamodule_without_to_submission_fails_at_definition_naming_it():
    with pytest.raises(TypeError, match=r"^Covid must define to_submission \(each homework's DataModule"):
        type("Covid", (HomeworkDataModule,), without(CovidDataModule, "to_submission"))


def test_every_missing_datamodule_member_is_named_at_once():
    with pytest.raises(TypeError) as raised:
        class Sketch(HomeworkDataModule):  # a homework's first draft: only its name and data finding
            homework = "hw9"

            @classmethod
            def find_layout(cls, directory):
                return None
    assert str(raised.value).startswith(
        "Sketch must define kaggle_competition, expected_files, submission_filename, submission_columns, write_demo, "
        "num_test_samples, to_submission, setup, train_dataloader, val_dataloader, predict_dataloader (")


def test_a_homework_name_that_is_not_hwN_is_refused():
    with pytest.raises(TypeError, match="homework is 'covid'; it names the homework"):
        type("Covid", (HomeworkDataModule,), {**without(CovidDataModule), "homework": "covid"})


def test_a_complete_datamodule_defines_and_a_subclass_of_a_homework_inherits_the_contract():
    assert type("Covid", (HomeworkDataModule,), without(CovidDataModule)).homework == "hw1"
    type("CovidAgain", (CovidDataModule,), {})  # inherits every member: defined without a TypeError


def test_a_datamodule_that_does_not_save_its_hyperparameters_is_told_so(tmp_path):
    class Forgetful(CovidDataModule):
        def __init__(self, data_dir=None):
            self.prepare_data_per_node = True  # (what LightningDataModule.__init__ would set)
            super(CovidDataModule, self).__init__()
            self.data_dir, self.files, self.is_demo = self.resolve_data_dir(data_dir)

    with pytest.raises(TypeError, match=r"Forgetful.__init__ must call self.save_hyperparameters\(\) before"):
        Forgetful(tmp_path)


def test_resolving_the_data_sets_data_dir_and_is_demo(tmp_path):
    CovidDataModule.write_demo(tmp_path)
    data = CovidDataModule(data_dir=str(tmp_path))
    assert (data.data_dir, data.is_demo) == (tmp_path, False)


def test_a_task_without_batch_loss_fails_at_definition_and_a_shared_base_may_be_abstract():
    with pytest.raises(TypeError, match=r"^Regressor must define batch_loss \(each homework's task does"):
        class Regressor(BaseTask):
            def forward(self, x):
                return x

            def training_step(self, batch, batch_idx):
                return None

            def validation_step(self, batch, batch_idx):
                return None

            def predict_step(self, batch, batch_idx):
                return None

    class SharedBase(ClassificationTask, abstract=True):  # (a shared base between BaseTask and homeworks)
        pass

    with pytest.raises(TypeError, match=r"^Classifier must define forward \("):
        class Classifier(SharedBase):
            pass


def test_a_task_monitoring_a_training_metric_or_an_unknown_mode_fails_at_definition():
    with pytest.raises(TypeError, match="monitor 'train_loss', mode 'min'; the monitor is a validation metric"):
        type("Regressor", (CovidRegressor,), {"monitor": "train_loss"})
    with pytest.raises(TypeError, match="mode 'maximum'"):
        type("Regressor", (CovidRegressor,), {"mode": "maximum"})


def test_a_task_that_does_not_save_its_hyperparameters_cannot_write_a_checkpoint():
    class Forgetful(CovidRegressor):
        def __init__(self):
            BaseTask.__init__(self)

    with pytest.raises(TypeError, match=r"Forgetful.__init__ must call self.save_hyperparameters\(\)"):
        Forgetful().on_save_checkpoint({})


def test_the_submission_writer_never_ends_a_predict_silently():
    """Without a homework's DataModule there is no file format: an error, not a predict that exits 0 with no file."""
    trainer = type("Trainer", (), {"datamodule": None})()
    with pytest.raises(SubmissionError, match="nothing written: predicting without a homework's DataModule"):
        KaggleSubmissionWriter().write_on_epoch_end(trainer, None, [torch.zeros(1)], [])
