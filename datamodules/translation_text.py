"""HW5's text, as the course's sample code reads and cleans it: the TED2020 files' layout (train_dev.raw.en/zh,
test.raw.en/zh), reading them line by line, and the cleaning (`strQ2B`, `clean_s`, `clean_corpus`). Plain
functions on text, apart from the DataModule (translation.py), which uses them, as does the demo writer.
"""

import re
from pathlib import Path

import numpy as np

from datamodules.errors import DataError

SRC, TGT = "en", "zh"
TRAIN_PREFIX, TEST_PREFIX = "train_dev.raw", "test.raw"
#: What test.raw.zh holds on every line when the course keeps the references.
PLACEHOLDER = "。"


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (split on newlines only: TED text holds U+2028, which
    `str.splitlines` would also split on, shifting every later line against the other language), without
    the byte-order mark Windows editors put first (it would be a character of line 1)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # (not "utf-8-sig": its error offsets skip the mark)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x}); "
                        f"convert it, e.g. `iconv -f big5 -t utf-8`") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def strQ2B(ustring: str) -> str:  # noqa: N802 (the course's name)
    """Full-width characters to half-width (the course's `strQ2B`): "（Ｈｉ！）" -> "(Hi!)"."""
    out = []
    for char in ustring:
        code = ord(char)
        if code == 0x3000:
            code = 0x20
        elif 0xFF01 <= code <= 0xFF5E:
            code -= 0xFEE0
        out.append(chr(code))
    return "".join(out)


def clean_s(s: str, lang: str) -> str:
    """The course's per-sentence cleaning: asides in parentheses removed, punctuation spaced out."""
    s = strQ2B(s.strip())  # the course converts zh only; English rarely has full-width text, and it does no harm
    s = re.sub(r"\([^()]*\)", "", s)  # remove (asides)
    if lang == "en":
        s = s.replace("-", "")
        s = re.sub(r'([.,;!?()"])', r" \1 ", s)
    else:
        for old, new in ((" ", ""), ("—", ""), ("“", '"'), ("”", '"'), ("_", "")):
            s = s.replace(old, new)
        s = re.sub(r'([。,;!?()"~「」])', r" \1 ", s)
    return " ".join(s.split())


def len_s(s: str, lang: str) -> int:
    """Chinese is counted in characters, English in words (the course's `len_s`)."""
    return len(s) if lang == "zh" else len(s.split())


def detokenize_zh(s: str) -> str:
    """A cleaned zh sentence as text: cleaning removed every space, then spaced out the punctuation."""
    return "".join(s.split())


def clean_corpus(src: list[str], tgt: list[str], max_len: int = 1000, ratio: float = 9,
                 source: str = "the corpus") -> tuple[list[str], list[str], np.ndarray]:
    """Clean every pair and drop the empty ones, those over `max_len` (words / characters) and those whose
    length ratio exceeds `ratio` (<= 0 turns a filter off); returns the kept pairs and their line numbers.
    A corpus emptied by this is a DataError naming the filter that removed most of it."""
    src = [clean_s(s, SRC) for s in src]
    tgt = [clean_s(s, TGT) for s in tgt]
    len_src = np.array([len_s(s, SRC) for s in src])
    len_tgt = np.array([len_s(s, TGT) for s in tgt])
    empty = (len_src < 1) | (len_tgt < 1)
    long = ~empty & (max_len > 0) & ((len_src > max_len) | (len_tgt > max_len))
    with np.errstate(divide="ignore", invalid="ignore"):
        uneven = ~empty & ~long & (ratio > 0) & ((len_src / len_tgt > ratio) | (len_tgt / len_src > ratio))
    keep = np.flatnonzero(~(empty | long | uneven))
    if len(keep) == 0:
        counts = {"empty after cleaning": int(empty.sum()), f"longer than max_len={max_len}": int(long.sum()),
                  f"length ratio over ratio={ratio}": int(uneven.sum())}
        worst = max(counts, key=counts.get)
        raise DataError(f"{source}: no sentence pair is left after cleaning ({len(src)} pairs; "
                        + ", ".join(f"{n} {why}" for why, n in counts.items())
                        + f"); most were removed as {worst}")
    return [src[i] for i in keep], [tgt[i] for i in keep], keep
