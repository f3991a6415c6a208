"""`tune`: a hyperparameter search with Optuna, on one machine or many sharing one study.

    python homework/hw1.py tune                                   # the homework's default space, 30 trials
    python homework/hw1.py tune --space my_space.yaml --n_trials 50 --trainer.max_epochs 200
    python homework/hw1.py tune --storage postgresql://user:pass@host/db --study hw1-big   # many machines

Options (every other option is `fit`'s and applies to every trial):
  --space FILE             the search space (homework/lab/search_space.py says the format);
                           default homework/configs/hwN_space.yaml
  --n_trials N             trials in the whole study, over every worker (default 30); finished trials count
  --study NAME             the study's name (default: the space file's name); its directory is
                           runs/hwN/tune_NAME, and the same command again continues it
  --storage URL            where the study lives: default a journal file in the study's directory, which any
                           number of `tune` processes on this machine (or on one shared filesystem) share;
                           postgresql://... (or mysql://...) for workers on many machines
  --print_config           check the space and the options, print the first trial's fit config, run nothing
  --heartbeat_interval S   with a database: each running trial's heartbeat, in seconds (default 60); a trial
                           whose worker died (no heartbeat for 2 x S) is marked failed and run again

Each trial is a normal `fit` (its own run directory inside the study's, checkpoints, learning curve, W&B run
grouped under the study's name), stopped early by Optuna's median pruner when its monitored metric, reported
after each validation, is worse than the median of earlier trials at the same epoch. At the end (of each worker)
the study's directory holds best_config.yaml (`fit --config` it to train the best trial's settings again),
study.png (the metric per trial with the best so far, and the parameters' importances) and trials.md (the top
trials, also printed). `predict --ckpt_path best` then picks the best trial's checkpoint.
"""
import io
import json
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Callable

import yaml

from callbacks import interrupt
from callbacks.finite import NonFiniteLoss
from callbacks.pruning import OptunaPruning, register, unregister
from datamodules.errors import DataError
from homework import runs
from homework.command_line import CONFIG_DIR, command, take
from homework.lab import search_space
from homework.lab.study_results import format_value, report
from homework.runs import tracking

DEFAULT_TRIALS = 30
STUDY_DIR = "tune_"  # runs/hwN/tune_<study>: the study's directory, the trials' run directories inside it
JOURNAL = "study.journal"
TRIAL_ENV = "NTU_ML_TUNE_TRIAL"  # a trial's fit options, for the other processes of a multi-device trial
#: Options every trial gets before the user's own (which win): the advisor's reference model is a second fit
#: per trial, and its words are about one run, not a search.
TRIAL_DEFAULTS = ["--diagnose", "false"]
PRUNING = "callbacks.OptunaPruning"


class Surplus(Exception):
    """A trial started after the study had its `--n_trials` (two workers asked at once): failed, not run."""


def _positive(name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise DataError(f"{name} {value}: give a positive whole number")
    return int(value)


def tune_command(args: list[str], make_cli: Callable[[list[str]], object], model_class, datamodule_class):
    """Search the space in as many trials as the study still needs, then write and print its results."""
    homework = datamodule_class.homework
    if "--help" in args or "-h" in args:
        print(__doc__.strip() + "\n\nThe space's format: homework/lab/search_space.py. Every other option is "
              f"`fit`'s: python homework/{homework}.py fit --help")
        raise SystemExit(0)
    if os.environ.get(TRIAL_ENV) is None and (int(os.environ.get("WORLD_SIZE", "1")) > 1
                                              or int(os.environ.get("SLURM_NTASKS", "1")) > 1):
        raise DataError("tune: start one process per worker (SLURM: one task per job; not under torchrun); a "
                        "trial on several devices: --trainer.devices N --trainer.strategy ddp (docs/tune.md)")
    if runs.launched_rank() > 0:  # another process of a multi-device trial: it trains what process 0 runs
        return follow(make_cli)
    printing = any(a.split("=")[0] == "--print_config" for a in args)  # check, print one trial's config, run nothing
    rest = [a for a in args if a.split("=")[0] != "--print_config"]
    rest, space = take(rest, "--space")
    rest, n_trials = take(rest, "--n_trials")
    rest, storage_url = take(rest, "--storage")
    rest, study_name = take(rest, "--study")
    rest, heartbeat = take(rest, "--heartbeat_interval")
    n_trials = _positive("--n_trials", n_trials, DEFAULT_TRIALS)
    heartbeat = _positive("--heartbeat_interval", heartbeat, 60)
    space_path = Path(space) if space else CONFIG_DIR / f"{homework}_space.yaml"
    params = search_space.load(space_path)
    study_name = study_name or re.sub(r"[^\w.-]", "_", space_path.stem)
    if not re.fullmatch(r"[\w.-]+", study_name):
        raise DataError(f"--study {study_name}: use letters, digits, '_', '-' and '.' (it names a directory)")
    at = rest.index("tune")
    given = [a.partition("=")[0][2:] for a in rest[at + 1:] if a.startswith("--")]
    clash = sorted(k for k in search_space.keys(params) if k in given)
    if clash:
        raise DataError(f"{space_path}: --{clash[0]} is both searched by the space and given on the command line; "
                        f"drop one (options on the command line apply to every trial)")
    if rest[at + 1:at + 2] == ["fit"]:  # (`fit` as an option's value is just a value)
        raise DataError("tune runs its own fits: drop `fit` (python homework/hwN.py tune [fit options])")
    base = rest[:at] + ["fit", *TRIAL_DEFAULTS] + rest[at + 1:]
    config = check_space(make_cli, base, params, space_path)
    if printing:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        raise SystemExit(0)
    root = runs.root_dir(homework, config["trainer"].get("default_root_dir"))
    extra = []
    logger = config["trainer"].get("logger")
    if isinstance(logger, dict) and logger.get("class_path") in tracking.WANDB_LOGGERS:
        extra = ["--trainer.logger.init_args.group", study_name]  # the trials' W&B runs, grouped by study
    study_dir = root / f"{STUDY_DIR}{study_name}"
    study = open_study(study_name, storage_url, study_dir, heartbeat, model_class, homework, space_path, config)
    search = Search(study, params, base + extra, study_dir, n_trials, make_cli, model_class.monitor,
                    heartbeat=storage_url is not None)
    search.run(command(homework, *args))
    return report(study, study_dir, homework, model_class.monitor, root, "--diagnose" in given, n_trials)


def check_space(make_cli, base: list[str], params: list[search_space.Param], space_path: Path) -> dict:
    """Parse one `fit` command line per set of example values (search_space.validation_sets) with the CLI's own
    parser, printing nothing: an unknown option or a value of the wrong type is one line naming the space file.
    Returns the first line's resolved config."""
    config = None
    keys = search_space.keys(params)
    for pairs in search_space.validation_sets(params):
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                make_cli(base + search_space.flag_pairs(pairs) + ["--print_config"])
        except DataError as err:
            about_space = any(re.search(rf"(--|'){re.escape(k)}\b", str(err)) for k in keys)
            raise DataError(f"{space_path}: {err}" if about_space else str(err)) from None
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
        config = config or yaml.safe_load(out.getvalue())
    return config


def open_storage(url: str | None, study_dir: Path, heartbeat: int):
    """The default: a journal file in the study's directory (file locks: processes of one machine, or of one
    shared filesystem). A database URL: Optuna's RDBStorage with a heartbeat, a dead worker's trial retried."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # (heartbeats, TPE's group)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial's own lines say what happened
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        study_dir.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))
    if not re.match(r"^(postgresql|mysql|sqlite)(\+\w+)?://", url):
        raise DataError(f"--storage {url}: give a database URL (postgresql://user:password@host:5432/db), or "
                        f"leave it out for a journal file in the study's directory")
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                _driver(url), engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except Exception as err:  # no server, a wrong password, no driver: one line without the password
            # workers starting together on a new database race to create its tables: the losers try again
            if type(err).__name__ in ("IntegrityError", "ProgrammingError") and attempt < 4:
                time.sleep(0.5 + random.random())
                continue
            shown = re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
            raise DataError(f"--storage {shown}: cannot open the study's database ({tracking.one_line(err)})") \
                from None


def _driver(url: str) -> str:
    """`postgresql://` through psycopg2 when only it is installed (the `postgresql` extra of setup.cfg):
    SQLAlchemy 2.1 reads a plain `postgresql://` as psycopg 3's."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def open_study(name: str, url: str | None, study_dir: Path, heartbeat: int, model_class, homework: str,
               space_path: Path, config: dict):
    import optuna

    storage = open_storage(url, study_dir, heartbeat)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=_warmup(config))
    # constant_liar: a worker's running trials count as bad while they run, so several workers spread out
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="minimize" if model_class.mode == "min" else "maximize",
                                load_if_exists=True)
    owner = study.user_attrs.get("homework")
    if owner is None:
        study.set_user_attr("homework", homework)
        study.set_user_attr("monitor", model_class.monitor)
        study.set_user_attr("space", space_path.read_text())
    elif owner != homework:
        raise DataError(f"--study {name}: that study is {owner}'s; give this search another name")
    elif search_space.parse(yaml.safe_load(study.user_attrs["space"])) != search_space.load(space_path):
        # (trials from two spaces would be ranked together, and the sampler would learn from both)
        raise DataError(f"--study {name}: that study searched another space than {space_path} (it keeps the one it "
                        f"began with); give this search another --study name, or search the study's space again")
    study_dir.mkdir(parents=True, exist_ok=True)
    return study


def _warmup(config: dict) -> int:
    """Epochs before a trial can be pruned: a quarter of the epoch budget (the schedules warm up, and early
    epochs rank models poorly)."""
    epochs = config["trainer"].get("max_epochs")
    return max(1, int(epochs) // 4) if isinstance(epochs, int) and epochs > 0 else 1


class Search:
    """study.optimize over fits: each trial is `make_cli(["fit", ...])`, a normal run in the study's directory."""

    def __init__(self, study, params, base: list[str], study_dir: Path, n_trials: int, make_cli, monitor: str,
                 heartbeat: bool):
        self.study, self.params, self.base, self.study_dir = study, params, base, study_dir
        self.n_trials, self.make_cli, self.monitor = n_trials, make_cli, monitor
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = heartbeat  # a database with heartbeats (else the journal file)
        self.ran = 0
        self.interrupted = False  # Ctrl-C ended a trial

    def counted(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                 TrialState.RUNNING)))

    def tidy(self, study=None, trial=None) -> None:
        """Fail the trials whose worker died, so that they do not count and are run again: by heartbeat with a
        database (Optuna), by process id on this machine with the journal file (it has no heartbeat)."""
        import optuna
        from optuna.trial import TrialState

        if self.heartbeat:
            optuna.storages.fail_stale_trials(self.study)
            return
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker_host, _, pid = str(t.user_attrs.get("worker", "")).partition(":")
            if worker_host == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                self.study.tell(t.number, state=TrialState.FAIL)
                self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
                print(f"Trial {t.number}'s worker (process {pid}) is gone: marked failed, queued again",
                      file=sys.stderr)

    def run(self, same_command: str) -> None:
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        self.tidy()
        if self.counted() >= self.n_trials:
            print(f"Study {self.study.study_name} has its {self.n_trials} trials (finished or running): nothing "
                  f"to run (--n_trials N for more)", flush=True)
            return
        # after Ctrl-C, Optuna's warnings that the trial failed (with KeyboardInterrupt's traceback) say nothing
        # the command does not say itself, last
        quiet = logging.Filter()
        quiet.filter = lambda record: not self.interrupted
        handlers = logging.getLogger("optuna").handlers
        for handler in handlers:
            handler.addFilter(quiet)
        try:
            # MaxTrialsCallback: --n_trials is the study's total, over every worker; running trials count, so
            # no worker starts one too many (dead workers' trials are failed first: `tidy`)
            self.study.optimize(self.objective, callbacks=[self.tidy, MaxTrialsCallback(
                self.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))],
                catch=(Surplus,), gc_after_trial=True)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            done = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
            print(f"Interrupted ({interrupt.stopped_by()}): the study keeps its {done} finished trial(s) "
                  f"in {self.study_dir}\n"
                  f"Continue: {same_command}", flush=True)
            raise SystemExit(interrupt.exit_code()) from None
        finally:
            for handler in handlers:
                handler.removeFilter(quiet)
            self.stop_followers()

    def objective(self, trial) -> float:
        import optuna

        trial.set_user_attr("worker", self.worker)
        if self.counted() - 1 >= self.n_trials:  # another worker started the last one as this one asked
            self.study.stop()
            trial.set_user_attr("surplus", True)
            raise Surplus(f"the study already has its {self.n_trials} trials")
        pairs = search_space.suggest(trial, self.params)
        key = f"{self.study.study_name}#{trial.number}"
        args = self.base + search_space.flag_pairs(pairs) + [
            "--trainer.default_root_dir", str(self.study_dir),
            "--trainer.callbacks+=" + json.dumps({"class_path": PRUNING, "init_args": {"trial": key}})]
        shown = ", ".join(f"{k} {format_value(v) if isinstance(v, float) else search_space._text(v)}" for k, v in pairs)
        print(f"\n=== trial {trial.number} of study {self.study.study_name} ({self.counted()} of {self.n_trials}): "
              f"{shown} ===", flush=True)
        register(key, trial)
        self.lead(args)
        try:
            cli = self.make_cli(args)
        except NonFiniteLoss as err:  # a diverging setting is a result too: pruned, so that it counts
            trial.set_user_attr("note", "diverged")
            raise optuna.TrialPruned(f"diverged: {err}") from None
        except SystemExit as err:
            # Ctrl-C or SIGTERM in the fit (it said what it kept): Optuna marks the trial failed
            if err.code == interrupt.exit_code():
                self.interrupted = True
                raise KeyboardInterrupt from None
            raise
        finally:
            unregister(key)
        self.ran += 1
        record = cli.record.record if getattr(cli, "record", None) is not None else {}
        run_dir = Path(cli.run_dir)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("epochs", record.get("epochs"))
        trial.set_user_attr("best_epoch", record.get("best_epoch"))
        if (run_dir / "config.yaml").is_file():  # (kept in the study: a worker elsewhere writes best_config.yaml)
            trial.set_user_attr("config", (run_dir / "config.yaml").read_text())
        pruning = next((c for c in cli.trainer.callbacks if isinstance(c, OptunaPruning)), None)
        pruned = pruning is not None and pruning.pruned_at is not None
        if cli.record is not None:
            cli.record.add(cli.trainer, study=self.study.study_name, trial=trial.number,
                           **({"status": "pruned"} if pruned else {}))
        score = record.get("best_score")
        if pruned:
            print(f"Trial {trial.number} pruned after epoch {pruning.pruned_at}: its {self.monitor} was worse than "
                  f"the median of earlier trials at that epoch", flush=True)
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        if score is None or not math.isfinite(score):
            trial.set_user_attr("note", "no finite score")
            raise optuna.TrialPruned("no finite validation score")
        return float(score)

    # --- a trial on several devices: process 0 runs the study, the others train what it sends ---------------
    def lead(self, args: list[str]) -> None:
        os.environ[TRIAL_ENV] = json.dumps(args)  # processes Lightning starts for the first trial read it
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # they run already: they wait for the next trial
            dist.broadcast_object_list([args], src=0)

    def stop_followers(self) -> None:
        os.environ.pop(TRIAL_ENV, None)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list([None], src=0)


def follow(make_cli) -> None:
    """Process k > 0 of multi-device trials: train the trial process 0 started these processes for, then each
    trial it sends, until it sends None (its study is done)."""
    import torch.distributed as dist

    args = json.loads(os.environ.get(TRIAL_ENV) or "null")
    while args is not None:
        make_cli(args)
        if not (dist.is_available() and dist.is_initialized()):
            break
        box = [None]
        dist.broadcast_object_list(box, src=0)
        args = box[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the results -----------------------------------------------------------------------------------------
