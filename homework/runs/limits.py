"""Options the data cannot satisfy, found by Lightning as it sizes the loaders: one line naming the option and
the number that fits, instead of Lightning's MisconfigurationException or ValueError traceback.

Why rewrite Lightning's messages rather than check first: how many batches a split makes is known only once the
DataModule's loaders exist, which is exactly where Lightning checks; its message holds the numbers
(pytorch-lightning 2.6.6; tests/test_reliability.py fails if the wording changes).
"""
import re

_FRACTION = re.compile(r"You requested to check (?P<given>\S+) of the `(?P<stage>\w+)_dataloader` but \S+ \* "
                       r"(?P<batches>\d+) < 1\. Please increase the `(?P<option>\w+)` argument\. Try at least "
                       r"`\w+=(?P<least>[\d.e-]+)`")
_INTERVAL = re.compile(r"`val_check_interval` \((?P<given>\S+)\) must be less than or equal to the number of the "
                       r"training batches \((?P<batches>\d+)\)")


def refused(err: BaseException) -> str | None:
    """The one line for Lightning's refusal of a batch limit or validation interval, None for anything else."""
    text = " ".join(str(err).split())
    found = _FRACTION.search(text)
    if found:
        least = float(found["least"])
        return (f"--trainer.{found['option']} {found['given']}: the {found['stage']} split has {found['batches']} "
                f"batch(es), so that fraction of it is none; give at least {least:.4g} (or a whole number of batches, "
                f"e.g. 1)")
    found = _INTERVAL.search(text)
    if found:
        n = found["batches"]
        return (f"--trainer.val_check_interval {found['given']}: an epoch has {n} training batch(es); give {n} or "
                f"fewer, a fraction such as 0.5, or add --trainer.check_val_every_n_epoch null to count batches "
                f"across epochs")
    return None
