"""Batches of pairs for one concatenated forward pass, and a length-grouped sampler.

A batch of B pairs becomes one (2B, T) tensor: rows 0..B-1 are the chosen conversations, rows B..2B-1
the rejected ones, right-padded with the pad token (never EOS). The reward model pools the rightmost
non-pad token of each row. A batch is a list of {"chosen_ids", "rejected_ids"} dicts (evaluation) or
the rows of the token cache as an Arrow table (`TokenizedPairs.take`, training); both give the same
tensors.
"""
from __future__ import annotations

import random

import numpy as np
import torch


class PairCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        if not isinstance(batch, list):
            return self._from_arrow(batch)
        seqs = [b["chosen_ids"] for b in batch] + [b["rejected_ids"] for b in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def _from_arrow(self, table) -> dict[str, torch.Tensor]:
        """Pad the `chosen_ids` then `rejected_ids` lists of an Arrow table or record batch, with numpy:
        one copy of the token ids, no Python loop over tokens or rows."""
        import pyarrow.compute as pc

        from repro.data.tokenize import int32_values

        cols = [table.column(k) for k in ("chosen_ids", "rejected_ids")]
        lens = np.concatenate([int32_values(pc.list_value_length(c)) for c in cols]).astype(np.int64)
        values = np.concatenate([int32_values(pc.list_flatten(c)) for c in cols])
        mask = np.arange(int(lens.max())) < lens[:, None]
        ids = np.full(mask.shape, self.pad_token_id, dtype=np.int64)
        ids[mask] = values  # row-major: row by row, each row's tokens in order
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def length_grouped_order(lengths, batch_size: int, seed: int, mega: int = 50) -> list[int]:
    """A shuffled order whose consecutive `batch_size` chunks have similar lengths (less padding).

    Shuffle, cut into mega-batches of `mega * batch_size`, sort each by length (longest first), then
    shuffle the order of the resulting batches. Deterministic for a seed. `lengths`: a list or a numpy
    array (the token cache's length column).
    """
    lengths = lengths.tolist() if isinstance(lengths, np.ndarray) else lengths
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    size = mega * batch_size
    batches = []
    for start in range(0, len(idx), size):
        chunk = sorted(idx[start : start + size], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    # Ragged batches (the tail of each mega-batch) go last, so every full batch stays aligned with the
    # fixed-size cuts of the DataLoader; the trainer drops the incomplete tail of an epoch anyway.
    full = [b for b in batches if len(b) == batch_size]
    rng.shuffle(full)
    return [i for b in full + [b for b in batches if len(b) < batch_size] for i in b]
