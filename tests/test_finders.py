"""The learning-rate finder's suggestion rule (homework/lab/finders.py) on constructed range-test curves: a point
on the falling stretch, never on a rising one, and none at all where nothing clearly falls."""
import numpy as np

from homework.lab.finders import plot_lr_finder, suggest_lr

LRS = np.logspace(-8, 0, 100)


def test_the_suggestion_is_the_middle_of_the_falling_stretch_not_a_noisy_early_wiggle():
    rng = np.random.default_rng(0)
    # the running average starts at a lucky first batch (113), rises to the plateau, falls from ~3e-3 to ~0.3
    plateau = 215 - 100 * np.exp(-np.arange(100) / 3)
    fall = 60 / (1 + np.exp(-(np.log10(LRS) + 1.5) * 4))
    losses = plateau - fall + rng.normal(0, 0.5, 100)
    s = suggest_lr(LRS, losses)
    assert 3e-3 < s.start < s.lr < s.end < 0.3 and s.high - s.low > 0.6 * 60  # (10%..90% of the fall)
    assert 0.01 < s.lr < 0.1 and s.lr == np.sqrt(s.start * s.end)  # the geometric middle


def test_no_clear_falling_stretch_means_no_suggestion():
    rng = np.random.default_rng(1)
    flat = 3.7 + rng.normal(0, 0.02, 100)  # e.g. random labels: the loss never moves
    s = suggest_lr(LRS, flat)
    assert s.lr is None and "no clear falling stretch" in s.reason
    rising = np.linspace(2, 9, 100)
    assert suggest_lr(LRS, rising).lr is None
    assert suggest_lr(LRS[:6], rising[:6]).lr is None  # too few steps to tell


def test_the_plot_explains_the_mark_in_its_legend(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    losses = 3.7 - 1.5 / (1 + np.exp(-(np.log10(LRS) + 3) * 3))
    s = suggest_lr(LRS, losses)
    plot_lr_finder(LRS, losses, s, tmp_path / "lr_find.png")
    (ax,) = saved[0].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith(f"suggested lr {s.lr:.3g}: the middle of the falling stretch") for label in labels)
    assert any(label.startswith("falling stretch: lr ") for label in labels)
    assert ax.get_title() == f"Learning-rate range test: suggested lr {s.lr:.3g}" and ax.get_xscale() == "log"
    plot_lr_finder(LRS, np.full(100, 3.7), suggest_lr(LRS, np.full(100, 3.7)), tmp_path / "none.png")
    assert saved[1].axes[0].get_title().endswith("no clear falling stretch, no suggestion")
