"""`NCSOFT/offsetbias`: one preference pair per row (file `train.jsonl`, split `train`).

Schema (DATASETS.md): `instruction`, `output_1`, `output_2` (str), `label` (int, 1 or 2 = the better
output). Pair: prompt = one user turn (`instruction`); chosen = `output_{label}`, rejected = the other.

One row is one candidate pair, so `len(pairs) + sum(drops.values())` is the number of rows. Every row
that does not give a pair is counted under a reason, never silently skipped:

* "label not 1 or 2": a label that is not the int 1 or 2 (another int, null, a string, a bool). Note that
  `datasets` reads a JSON column of mixed types as `Json` and decodes a string like `"1"` back to 1.
* then `schema.pair_problem` on the built pair: a null or non-string output ("response is not a
  string"), an empty one, identical outputs, a null/empty instruction ("malformed prompt message" /
  "empty prompt").
"""
from __future__ import annotations

from collections import Counter

import pyarrow as pa

from repro.data.hub import dataset_tag, load_split
from repro.data.schema import PairTable, iter_rows, make_pair

HUB_ID = "NCSOFT/offsetbias"
SOURCE = "offsetbias"
COLUMNS = ("instruction", "output_1", "output_2", "label")


def load(path: str = HUB_ID, split: str = "train") -> tuple[pa.Table, Counter]:
    ds = load_split(path, split, data_dir=None, columns=COLUMNS)
    tag = dataset_tag(path)
    out, drops = PairTable(), Counter()
    for i, row in iter_rows(ds, COLUMNS):
        label = row["label"]
        if type(label) is not int or label not in (1, 2):  # noqa: E721 - bool is an int subclass
            drops["label not 1 or 2"] += 1
            continue
        chosen, rejected = (row["output_1"], row["output_2"]) if label == 1 else (row["output_2"], row["output_1"])
        pair = make_pair(id=f"{tag}:{split}:{i}", source=SOURCE,
                         prompt=[{"role": "user", "content": row["instruction"]}],
                         chosen=chosen, rejected=rejected)
        out.keep_or_count(pair, drops)
    return out.table(rows_read=ds.num_rows), drops
