"""homework/registry.py: the homeworks are found from homework/hwN.py, and each declares its own config files, so
a new homework is picked up by every shared list (tests, notebooks, benchmarks) without an edit."""
import pytest
import yaml

from homework import registry


@pytest.fixture
def fake_homework_folder(tmp_path, monkeypatch):
    """A homework/ folder of entry points and configs, as a maintainer adding HW7 and HW10 would leave it."""
    for name in ("hw1.py", "hw2.py", "hw10.py", "hw7.py", "registry.py", "hw7_utils.py", "hwx.py"):
        (tmp_path / name).write_text('"""an entry point"""\n')
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "hw7_tiny.yaml").write_text("model:\n  hidden_dims: [8, 4]\n  net: null\n"
                                           "trainer:\n  max_epochs: 1\n  limit_train_batches: 0.5\n")
    monkeypatch.setattr(registry, "HERE", tmp_path)
    monkeypatch.setattr(registry, "CONFIGS", configs)
    registry.tiny.cache_clear()
    yield tmp_path
    registry.tiny.cache_clear()


def test_a_new_entry_point_is_a_homework_in_course_order(fake_homework_folder):
    assert registry.names() == ["hw1", "hw2", "hw7", "hw10"]  # (not hw7_utils, hwx or registry; hw10 after hw7)
    assert registry.config("hw7", "tiny") == fake_homework_folder / "configs" / "hw7_tiny.yaml"
    assert registry.config("hw7") == fake_homework_folder / "configs" / "hw7.yaml"


def test_a_new_homeworks_tiny_recipe_is_read_from_its_own_file(fake_homework_folder):
    assert registry.tiny("hw7") == ("--model.hidden_dims", "[8, 4]", "--model.net", "null",
                                    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "0.5")


def test_a_homework_without_its_tiny_recipe_is_told_where_it_goes(fake_homework_folder):
    with pytest.raises(FileNotFoundError, match=r"configs/hw10_tiny\.yaml: every homework declares"):
        registry.tiny("hw10")
    with pytest.raises(KeyError, match="no homework 'hw8'; there are hw1, hw2, hw7, hw10"):
        registry.module("hw8")


@pytest.mark.parametrize("homework", registry.names())
def test_every_homework_declares_its_configs_and_page(homework, capsys):
    """What docs/architecture.md's "Adding a homework" asks for, beside the entry point: the recipe, the tiny
    recipe, the `tune` space, the course's sample, its page."""
    for kind in ("", "tiny", "space", "sample"):
        path = registry.config(homework, kind)
        assert path.is_file(), f"{homework} has no {path.name}"
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    assert (registry.HERE.parent / "docs" / f"{homework}.md").is_file()
    # every key of the tiny recipe is an option of `fit` (a key the CLI does not know fails here, not in a test)
    with pytest.raises(SystemExit) as done:
        registry.module(homework).main(["fit", *registry.tiny(homework), "--print_config"])
    assert done.value.code == 0
