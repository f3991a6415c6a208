"""HW5's demo set: English number phrases -> Chinese numerals in the course's layout, a deterministic mapping
a Transformer learns in minutes (what `fit` trains on before the course's data is there)."""

from pathlib import Path

import numpy as np

from datamodules.translation_text import PLACEHOLDER, SRC, TEST_PREFIX, TGT, TRAIN_PREFIX

ONES = "zero one two three four five six seven eight nine".split()
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
DIGITS_ZH = "零一二三四五六七八九"
#: (English template, Chinese template): a number phrase in a sentence, as the demo's translations.
DEMO_TEMPLATES = (
    ("{}.", "{}。"),
    ("I have {} books.", "我有{}本书。"),
    ("He paid {} dollars.", "他付了{}美元。"),
)


def number_en(n: int) -> str:
    """English words for 1 <= n < 100000: 42312 -> "forty-two thousand three hundred and twelve"."""
    def below_thousand(m: int) -> list[str]:
        words = []
        if m >= 100:
            words += [ONES[m // 100], "hundred"] + (["and"] if m % 100 else [])
            m %= 100
        if m >= 20:
            words.append(TENS[m // 10] + (f"-{ONES[m % 10]}" if m % 10 else ""))
        elif m >= 10:
            words.append(TEENS[m - 10])
        elif m > 0:
            words.append(ONES[m])
        return words

    words = (below_thousand(n // 1000) + ["thousand"] if n >= 1000 else []) + below_thousand(n % 1000)
    return " ".join(words)


def number_zh(n: int) -> str:
    """Chinese numerals for 1 <= n < 100000: 42312 -> 四万二千三百一十二, 1005 -> 一千零五, 15 -> 十五."""
    units = ["", "十", "百", "千", "万"]
    digits = [int(d) for d in str(n)]
    out, zero = [], False
    for power, d in zip(range(len(digits) - 1, -1, -1), digits):
        if d == 0:
            zero = True
            continue
        if zero and out:
            out.append("零")
        zero = False
        out.append(DIGITS_ZH[d] + units[power])
    text = "".join(out)
    return text[1:] if text.startswith("一十") else text  # 15 is 十五, not 一十五


def write_demo_translation(directory: Path, num_train: int = 12000, num_test: int = 500, seed: int = 0) -> None:
    """English number phrases -> Chinese numerals, in the course's layout (test.raw.zh holds its `。`
    placeholders, as the course ships it): a deterministic mapping a Transformer learns in minutes."""
    rng = np.random.default_rng(seed)
    numbers = np.where(rng.random(num_train + num_test) < 0.5, rng.integers(1, 1000, num_train + num_test),
                       rng.integers(1, 100000, num_train + num_test))
    templates = rng.integers(len(DEMO_TEMPLATES), size=len(numbers))
    en = [DEMO_TEMPLATES[t][0].format(number_en(int(n))).capitalize() for n, t in zip(numbers, templates)]
    zh = [DEMO_TEMPLATES[t][1].format(number_zh(int(n))) for n, t in zip(numbers, templates)]
    directory.mkdir(parents=True, exist_ok=True)

    def write(name: str, lines: list[str]) -> None:
        (directory / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write(f"{TRAIN_PREFIX}.{SRC}", en[:num_train])
    write(f"{TRAIN_PREFIX}.{TGT}", zh[:num_train])
    write(f"{TEST_PREFIX}.{SRC}", en[num_train:])
    write(f"{TEST_PREFIX}.{TGT}", [PLACEHOLDER] * num_test)
