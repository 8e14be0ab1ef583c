"""The generator of the shipped demo corpus, `seqtune/demo_data/paraphrase` (no text copied from any corpus).

    python -m seqtune.demo_data.generate      # rewrites seqtune/demo_data/paraphrase (seed 0: the same files)

It lives beside the data it makes and outside the library: nothing in seqtune imports it at run time (the tests
do, for small generated sets) and the installed package ships only the CSV files.

Each pair states one event twice. Paraphrases (label 1, `equivalent`) say the same facts with other words
or another sentence shape; non-paraphrases (label 0, `not_equivalent`) look just as similar on the surface but
change one fact (who, what, where or when), so a model must compare details, as in MRPC.
`make_paraphrase_pairs` feeds the tests; `write_demo_dataset` writes the shipped copy (a local folder laid out
like a Hub dataset, with ClassLabel names).
"""

from __future__ import annotations

import csv
import os
import random

from seqtune.fileio import atomic_write

PEOPLE = ["the mayor", "a local farmer", "the head teacher", "our neighbour", "the new manager", "a young nurse",
          "the team captain", "an old fisherman", "the company founder", "a museum guide", "the bus driver",
          "the city council", "a retired pilot", "the lead engineer", "my cousin", "the night guard"]
# (past tense, synonym in past tense, past participle of the synonym)
VERBS = [("bought", "purchased", "purchased"), ("repaired", "fixed", "fixed"), ("sold", "sold off", "sold off"),
         ("painted", "repainted", "repainted"), ("found", "discovered", "discovered"),
         ("built", "constructed", "constructed"), ("lost", "misplaced", "misplaced"),
         ("cleaned", "washed", "washed"), ("delivered", "dropped off", "dropped off"),
         ("opened", "unlocked", "unlocked"), ("inspected", "examined", "examined"), ("moved", "shifted", "shifted")]
THINGS = ["boat", "old piano", "red bicycle", "garden shed", "wooden bridge", "delivery van", "school bus",
          "kitchen table", "front gate", "library door", "fishing net", "small tractor", "church bell",
          "broken clock", "green tent", "metal ladder"]
PLACES = [("in the harbour", "at the harbour"), ("near the station", "close to the station"),
          ("in the village", "in the small village"), ("behind the market", "at the back of the market"),
          ("on the farm", "at the farm"), ("in the city centre", "downtown"), ("by the river", "next to the river"),
          ("at the school", "on the school grounds"), ("in the old town", "in the historic quarter"),
          ("near the airport", "close to the airport")]
DAYS = [("on Monday", "on Monday morning"), ("on Tuesday", "on Tuesday"), ("last week", "a week ago"),
        ("yesterday", "the day before"), ("on Friday", "on Friday afternoon"), ("this morning", "earlier today"),
        ("in March", "in early March"), ("over the weekend", "at the weekend"), ("on Sunday", "on Sunday evening")]
LABEL_NAMES = ("not_equivalent", "equivalent")


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _render(rng: random.Random, person, verb, thing, place, day, paraphrase_style: bool) -> str:
    """One sentence for the facts: the plain form, or (paraphrase_style) synonyms in a random other shape."""
    if not paraphrase_style:
        return _cap(f"{person} {verb[0]} the {thing} {place[0]} {day[0]}.")
    shape = rng.randrange(3)
    if shape == 0:
        return _cap(f"{day[1]}, {person} {verb[1]} the {thing} {place[1]}.")
    if shape == 1:
        return _cap(f"the {thing} was {verb[2]} by {person} {place[1]} {day[1]}.")
    return _cap(f"{place[1]}, {person} {verb[1]} the {thing} {day[1]}.")


def make_paraphrase_pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` rows {sentence1, sentence2, label, idx}; about 60 % paraphrases, as in MRPC's training split."""
    rng = random.Random(seed)
    rows = []
    for idx in range(n):
        facts = [rng.choice(PEOPLE), rng.choice(VERBS), rng.choice(THINGS), rng.choice(PLACES), rng.choice(DAYS)]
        first = _render(rng, *facts, paraphrase_style=rng.random() < 0.3)
        label = int(rng.random() < 0.6)
        if not label:  # change one fact to another value of the same kind
            slot = rng.randrange(5)
            pool = [PEOPLE, VERBS, THINGS, PLACES, DAYS][slot]
            facts[slot] = rng.choice([x for x in pool if x != facts[slot]])
        second = _render(rng, *facts, paraphrase_style=True)
        rows.append({"sentence1": first, "sentence2": second, "label": label, "idx": idx})
    return rows


DATASET_CARD = """---
configs:
- config_name: default
  data_files:
  - {split: train, path: train.csv}
  - {split: validation, path: validation.csv}
  - {split: test, path: test.csv}
dataset_info:
  features:
  - {name: sentence1, dtype: string}
  - {name: sentence2, dtype: string}
  - name: label
    dtype:
      class_label:
        names: {'0': not_equivalent, '1': equivalent}
  - {name: idx, dtype: int32}
---
# seqtune demo paraphrases

Sentence pairs generated by `seqtune/demo_data/generate.py` (seed 0): each pair describes one event; pairs
labelled `equivalent` say the same thing in other words, `not_equivalent` pairs change one fact. Same columns as
GLUE MRPC (`sentence1`, `sentence2`, `label`, `idx`). Load it with `load_dataset("seqtune/demo_data/paraphrase")`.
"""


def write_demo_dataset(folder: str, sizes: dict[str, int] | None = None, seed: int = 0) -> None:
    sizes = sizes or {"train": 800, "validation": 200, "test": 200}
    rows = make_paraphrase_pairs(sum(sizes.values()), seed)
    os.makedirs(folder, exist_ok=True)
    start = 0
    for split, size in sizes.items():
        with atomic_write(os.path.join(folder, f"{split}.csv"), newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["sentence1", "sentence2", "label", "idx"])
            writer.writeheader()
            for i, row in enumerate(rows[start:start + size]):
                writer.writerow({**row, "idx": i, "label": row["label"] if split != "test" else -1})
        start += size
    with atomic_write(os.path.join(folder, "README.md")) as f:
        f.write(DATASET_CARD)


if __name__ == "__main__":
    write_demo_dataset(os.path.join(os.path.dirname(os.path.abspath(__file__)), "paraphrase"))
