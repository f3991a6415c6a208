"""W&B never stops training: offline without a login (and then no network at all), a CSV log in the run
directory when W&B cannot start or fails while writing, said in one line; the run id to continue a run."""
import os
import socket
import threading
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl

from homework.runs import tracking
from homework.hw1 import main
from tests.conftest import QUIET, user_error

EPOCHS = 3
FIT = ["fit", "--trainer.max_epochs", str(EPOCHS), "--early_stopping.patience", "10", *QUIET]


class Listener:
    """A local TCP server that records every connection (and drops it): where W&B's server and every HTTP(S)
    proxy point, so any attempt to reach the network is seen."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections += 1
            connection.close()


@pytest.fixture
def network(monkeypatch):
    """W&B turned on (conftest turns it off) with no login, and all traffic pointed at a `Listener`."""
    import wandb

    listener = Listener()
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", listener.url)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(proxy, listener.url)
    for exempt in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(exempt, raising=False)
    wandb.teardown()  # W&B's service process starts with the environment of the first run in a process
    yield listener
    wandb.teardown()
    listener.server.close()


def fallback_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("W&B ")]


def epochs_in(csv: Path) -> list[int]:
    frame = pd.read_csv(csv)
    return sorted(int(e) for e in frame.dropna(subset=["val_mse"])["epoch"])


def check_finished(out: str) -> None:
    """The CLI's last lines: the score, the run directory, the next command."""
    last = out.strip().splitlines()[-3:]
    assert last[0].startswith("Best val_mse = ") and last[1].startswith("Run directory: ") and \
        last[2].startswith("Next: "), last


def test_offline_without_a_login_never_touches_the_network(network, capsys):
    cli = main(FIT)
    out = capsys.readouterr().out
    assert network.connections == 0
    (run,) = Path("runs/hw1").iterdir()
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert "W&B: logged offline; upload with `wandb sync" in out
    assert tracking.run_id(cli.trainer) == offline.name.rsplit("-", 1)[1]  # the id a resumed fit continues
    check_finished(out)


def test_wandb_that_cannot_start_falls_back_to_a_csv_log_in_one_line(network, monkeypatch, capsys):
    """A key that W&B believes in, and a server that drops every connection: W&B gives up after its init
    timeout (shortened here), and the fit goes on with Lightning's CSVLogger."""
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "1")
    cli = main(FIT)
    captured = capsys.readouterr()
    assert network.connections > 0  # it tried (so the test above would have seen an attempt too)
    (run,) = Path("runs/hw1").iterdir()
    (line,) = fallback_lines(captured.err)
    assert line.startswith("W&B could not start (") and line.endswith(f"logging to {run}/metrics.csv instead")
    assert epochs_in(run / "metrics.csv") == list(range(EPOCHS))
    assert [type(logger).__name__ for logger in cli.trainer.loggers] == ["CSVLogger"]
    assert (run / "config.yaml").is_file() and list((run / "checkpoints").glob("best-*.ckpt"))
    assert tracking.run_id(cli.trainer) is None
    assert "W&B: logged" not in captured.out
    check_finished(captured.out)


@pytest.mark.parametrize("failing", ["log", "config"])
def test_wandb_failing_while_writing_falls_back_to_a_csv_log_in_one_line(failing, network, monkeypatch, capsys):
    """W&B started, then a write fails (metrics, or the config at the start): the rest goes to the CSV log."""
    from wandb.sdk.wandb_config import Config
    from wandb.sdk.wandb_run import Run

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "log":
        monkeypatch.setattr(Run, "log", broken)
    else:
        monkeypatch.setattr(Config, "update", broken)
    cli = main(FIT)
    captured = capsys.readouterr()
    (run,) = Path("runs/hw1").iterdir()
    (line,) = fallback_lines(captured.err)
    assert line.startswith("W&B stopped logging (no space left on the disk (") and \
        line.endswith(f"): logging to {run}/metrics.csv instead"), line
    assert epochs_in(run / "metrics.csv") == list(range(EPOCHS))
    assert tracking.run_id(cli.trainer) is not None  # the W&B run itself started
    assert network.connections == 0
    check_finished(captured.out)


def test_the_logger_continues_a_run_by_id_and_starts_with_a_short_timeout(monkeypatch):
    from pytorch_lightning import Trainer

    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)
    logger = tracking.WandbLogger(id="abc123", save_dir="w")
    assert logger._wandb_init["id"] == "abc123" and logger._wandb_init["resume"] == "allow"
    assert tracking.WandbLogger()._wandb_init["id"] is None
    trainer = Trainer(logger=logger, enable_checkpointing=False, enable_progress_bar=False)
    tracking.prepare(trainer)
    assert logger._wandb_init["settings"] == {"silent": True, "init_timeout": tracking.INIT_TIMEOUT}
    assert tracking.run_id(trainer) is None  # not started
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")  # the user's own setting wins
    other = tracking.WandbLogger(save_dir="w")
    tracking.prepare(Trainer(logger=other, enable_checkpointing=False, enable_progress_bar=False))
    assert "init_timeout" not in other._wandb_init["settings"]


def test_a_wandb_folder_of_the_users_keeps_its_files_and_the_run_its_config(network):
    # W&B's folder given apart from the run directory: Lightning wrote the run's config.yaml there (its log_dir),
    # replacing a file of the user's, and leaving the run without the config `--resume` reads
    Path("mine").mkdir()
    Path("mine/config.yaml").write_text("my own config\n")
    main([*FIT, "--trainer.logger.init_args.save_dir", "mine"])
    (run,) = Path("runs/hw1").iterdir()
    assert Path("mine/config.yaml").read_text() == "my own config\n" and list(Path("mine/wandb").glob("offline-run-*"))
    assert "save_dir: mine" in (run / "config.yaml").read_text()
    main(["fit", "--resume", str(run), "--trainer.max_epochs", str(EPOCHS + 1), *QUIET])


class FillFolder(pl.Callback):
    """After the first epoch, fills the disk W&B's folder is on."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            with open(Path(trainer.logger.save_dir).parent / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass


def test_a_wandb_folder_that_fills_mid_run_is_one_line_naming_the_file(network, small_disk, capsys):
    folder = small_disk / "wandb-files"
    # filled mid-run: training goes on, the line names the file W&B could not write, the CSV log is in the run
    main([*FIT, "--trainer.logger.init_args.save_dir", str(folder), f"--trainer.callbacks+={__name__}.FillFolder"])
    captured = capsys.readouterr()
    (run,) = Path("runs/hw1").iterdir()
    (line,) = fallback_lines(captured.err)
    assert line.startswith(f"W&B stopped logging (cannot write '{folder}/wandb/") and \
        "': no space left on the disk (" in line and line.endswith(f"logging to {run}/metrics.csv instead"), line
    check_finished(captured.out)


def test_a_read_only_wandb_folder_is_one_line_before_training(network, small_disk, capsys):
    # (a Drive folder shared read-only): refused before training, naming the option and the folder
    folder = small_disk / "wandb-files"
    folder.mkdir()  # (there already: only a write tells)
    assert os.system(f"mount -o remount,ro {small_disk}") == 0
    line = user_error(capsys, main, [*FIT, "--trainer.logger.init_args.save_dir", str(folder)])
    assert line == (f"error: --trainer.logger.init_args.save_dir {folder}: W&B's folder cannot be written (a "
                    f"read-only file system); give a folder you can write to, or leave the option out (W&B then "
                    f"writes in the run directory)")
