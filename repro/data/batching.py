"""Batches of pairs for one concatenated forward pass, and a length-grouped sampler.

A batch of B pairs becomes one (2B, T) tensor: rows 0..B-1 are the chosen conversations, rows B..2B-1
the rejected ones, right-padded with the pad token (never EOS). The reward model pools the rightmost
non-pad token of each row. A batch is a list of {"chosen_ids", "rejected_ids"} dicts (evaluation) or
the rows of the token cache as an Arrow table (`TokenizedPairs.take`, training); both give the same
tensors.

Padding-free (`PairCollator(..., padding_free=True)`, `optim.padding_free`): the 2B conversations are
laid end to end in one (1, N) row, N = the sum of their lengths, with `position_ids` restarting at 0 for
each conversation and no attention mask; transformers then confines every token's attention to its own
conversation (block-diagonal: flash-attention's variable-length kernels, or an explicit mask for eager and
sdpa). `ends` holds the index of each conversation's last token, where its reward is read (chosen first,
then rejected). No token is padding; the rewards equal the padded layout's up to float rounding.
"""
from __future__ import annotations

import random

import numpy as np
import torch


class PairCollator:
    def __init__(self, pad_token_id: int, *, padding_free: bool = False):
        self.pad_token_id = pad_token_id
        self.padding_free = padding_free

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        if not isinstance(batch, list):
            return self._from_arrow(batch)
        seqs = [b["chosen_ids"] for b in batch] + [b["rejected_ids"] for b in batch]
        if self.padding_free:
            return packed(np.fromiter((t for s in seqs for t in s), dtype=np.int64),
                          np.array([len(s) for s in seqs], dtype=np.int64))
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
        if self.padding_free:
            return packed(values.astype(np.int64), lens)
        mask = np.arange(int(lens.max())) < lens[:, None]
        ids = np.full(mask.shape, self.pad_token_id, dtype=np.int64)
        ids[mask] = values  # row-major: row by row, each row's tokens in order
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def packed(values: np.ndarray, lens: np.ndarray) -> dict[str, torch.Tensor]:
    """The padding-free batch of conversations whose token ids, end to end, are `values` (int64) and whose
    lengths are `lens`: input_ids and position_ids of shape (1, N), and `ends`, each conversation's last index."""
    if (lens < 1).any():
        raise ValueError("an empty conversation cannot be packed (it has no token to read a reward from)")
    ends = np.cumsum(lens) - 1
    starts = ends - lens + 1
    positions = np.arange(len(values), dtype=np.int64) - np.repeat(starts, lens)
    return {"input_ids": torch.from_numpy(values)[None], "position_ids": torch.from_numpy(positions)[None],
            "ends": torch.from_numpy(ends)}


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
