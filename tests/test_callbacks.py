"""Shared callbacks: the Kaggle file validator and atomic writer, the LR schedule, the learning curve."""
import math

import pandas as pd
import pytest
import torch

from callbacks import SubmissionError, WarmupCosineLR, validate_submission, write_submission


def submission(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"id": range(rows), "tested_positive": [1.5] * rows})


def test_validator_accepts_a_correct_file():
    validate_submission(submission(3), ["id", "tested_positive"], 3)


@pytest.mark.parametrize("frame, rows, message", [
    (submission(2), 3, "2 rows, but the test set has 3"),
    (submission(3).rename(columns={"id": "Id"}), 3, "Kaggle expects"),
    (submission(3).assign(tested_positive=[1.0, float("nan"), 2.0]), 3, "missing (NaN)"),
    (submission(3).assign(tested_positive=[1.0, float("inf"), 2.0]), 3, "infinite"),
])
def test_validator_rejects_bad_files(frame, rows, message):
    with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_submission(frame, ["id", "tested_positive"], rows)


def test_atomic_write_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    path = tmp_path / "pred.csv"
    write_submission(submission(3), path)
    before = path.read_text()

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt  # interrupted half-way through writing
    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    with pytest.raises(KeyboardInterrupt):
        write_submission(submission(5), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"]  # no temp file left behind


def test_warmup_cosine_shape():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = WarmupCosineLR(opt, warmup_steps=10, min_lr_ratio=0.1)
    assert opt.param_groups[0]["lr"] == 1.0  # total unknown yet: no change
    sched.set_total_steps(110)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
