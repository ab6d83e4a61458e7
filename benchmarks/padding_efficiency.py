"""Padding efficiency of training batches: the length-grouped sampler vs a random order, no training.

    python benchmarks/padding_efficiency.py [--pairs 81973] [--micro-batch 8] [--epochs 3]
                                            [--out benchmarks/results/padding_efficiency.json]

A micro-batch of B pairs is one (2B, T) tensor (chosen rows, then rejected rows, right-padded to the
longest of the 2B conversations: `repro.data.batching.PairCollator`), so the model processes 2B x T
tokens of which the sum of the 2B lengths are real. Efficiency = real tokens / processed tokens over
whole epochs, with the engine's epoch order (`length_grouped_order(lengths, B, seed + epoch)`, cut to
whole global batches) against a uniformly shuffled order of the same pairs.

Lengths (synthetic, deterministic, numpy seed 0; no text, no tokenizer): Table 1's mix of the 80K set
(pairs per source, average prompt and response tokens: `../shared/docs/paper/table1_composition.csv`),
prompt tokens gamma-distributed with shape 1.5, the chosen and the rejected response gamma with shape
2.5, each with its source's mean (the shapes of `curation_speed.py`'s synthetic pool), HelpSteer2
prompts of 1, 3 or 5 messages (mean 2.9, Table 1's 3.9 turns with the response), plus a Llama-3-style
chat template's 5 tokens per message and BOS. Pairs longer than `--max-length` (4,096) are dropped, as
training drops them. The paper does not report how correlated the two responses' lengths are; the
chosen and rejected lengths are drawn independently by default, and the result is repeated with
correlated log-lengths (`--correlations`) to show how much that assumption matters.

Besides the two samplers the script reports two bounds, to separate what the sampler loses from what
the batch layout loses: `ideal_sorted` (micro-batches cut from the whole set sorted by pair length) and
`pair_bound` = real / (2 x the sum of each pair's longer conversation): the efficiency if no pair were
ever padded beyond its own longer conversation. What remains below it is the shorter response of each
pair padded to the longer one, inherent in putting both in one (2B, T) tensor: no order removes it.
`split_halves_efficiency` is the same orders with chosen rows padded to the longest chosen and rejected
rows to the longest rejected (two widths).

The padding-free layout (`optim.padding_free=true`: the 2B conversations end to end in one row) is measured
through the package's own collator: every micro-batch of one epoch of each order is collated, padded and
padding-free, from an Arrow table holding conversations of the drawn lengths (`collated`), and the tokens
in the tensors it returns are counted. Attention work is reported beside it, in query-key pairs of one
head and layer: the padded (2B, T) batch computes 2B x T^2, the padding-free row with flash-attention's
variable-length kernels the sum of the squared lengths (what the conversations need: an attention efficiency
of 1 by construction, not reported), with the N x N mask of eager and sdpa N^2 for N tokens in the row. The sampler's mega-batch size (`mega`, 50 by default) is
varied through the function's own argument: reported, not changed (the demo's numbers depend on it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from repro.data.batching import length_grouped_order
from repro.results import env_info

# Table 1 (paper/table1_composition.csv): pairs, average prompt tokens, average response tokens.
TABLE1 = {
    "HelpSteer2": (7_221, 21.3, 690.0), "OffsetBias": (8_504, 69.1, 222.1), "WildGuardMix": (6_709, 164.3, 349.9),
    "Magpie Ultra": (27_785, 76.7, 670.0), "Magpie Pro (Llama 3)": (2_030, 34.2, 621.5),
    "Magpie Pro (Llama 3.1)": (29_682, 118.8, 584.3), "Magpie Air": (42, 66.6, 240.0),
}
PROMPT_SHAPE, RESPONSE_SHAPE = 1.5, 2.5
TEMPLATE_PER_MESSAGE, TEMPLATE_BOS = 5, 1  # <|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|>; BOS
HS2_PROMPT_MESSAGES = ((1, 3, 5), (0.3, 0.45, 0.25))  # mean 2.9


def table1_lengths(n_pairs: int, seed: int = 0, rho: float = 0.0, *, shared: bool = False):
    """(chosen tokens, rejected tokens) per pair of a Table-1-like mix of `n_pairs`, and the mix used; with
    `shared`, also the tokens the two conversations share (template, prompt turns) and the prompt messages."""
    rng = np.random.default_rng(seed)
    total = sum(v[0] for v in TABLE1.values())
    counts = {k: round(n_pairs * v[0] / total) for k, v in TABLE1.items()}
    chosen, rejected, bases, n_messages = [], [], [], []
    for name, (_, p_mean, r_mean) in TABLE1.items():
        n = counts[name]
        prompt = rng.gamma(PROMPT_SHAPE, p_mean / PROMPT_SHAPE, n)
        if rho:  # correlated draws through a Gaussian copula of the two gamma marginals
            from scipy.stats import gamma, norm

            z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], n)
            c, r = (gamma.ppf(norm.cdf(z[:, i]), RESPONSE_SHAPE, scale=r_mean / RESPONSE_SHAPE) for i in (0, 1))
        else:
            c, r = (rng.gamma(RESPONSE_SHAPE, r_mean / RESPONSE_SHAPE, n) for _ in (0, 1))
        messages = (rng.choice(HS2_PROMPT_MESSAGES[0], n, p=HS2_PROMPT_MESSAGES[1]) if name == "HelpSteer2"
                    else np.ones(n, dtype=np.int64))
        overhead = TEMPLATE_BOS + TEMPLATE_PER_MESSAGE * (messages + 1)
        base = np.maximum(np.rint(prompt), 1) + overhead
        chosen.append(base + np.maximum(np.rint(c), 1))
        rejected.append(base + np.maximum(np.rint(r), 1))
        bases.append(base)
        n_messages.append(messages)
    order = rng.permutation(sum(counts.values()))  # sources interleaved, as in a curated set
    out = tuple(np.concatenate(x)[order].astype(np.int64) for x in (chosen, rejected, bases, n_messages))
    return (*out, counts) if shared else (out[0], out[1], counts)


def efficiency(order: list[int] | np.ndarray, chosen: np.ndarray, rejected: np.ndarray, micro: int) -> dict:
    """Real / processed tokens of the micro-batches of `order` (whole micro-batches only)."""
    idx = np.asarray(order, dtype=np.int64)
    idx = idx[: len(idx) // micro * micro].reshape(-1, micro)
    c, r = chosen[idx], rejected[idx]
    width = np.maximum(c.max(axis=1), r.max(axis=1))
    real = int(c.sum() + r.sum())
    processed = int((2 * micro * width).sum())
    split = int((micro * (c.max(axis=1) + r.max(axis=1))).sum())  # chosen and rejected rows padded apart
    return {"real_tokens": real, "processed_tokens": processed, "efficiency": real / processed,
            "split_halves_processed_tokens": split}


def collated(order, chosen: np.ndarray, rejected: np.ndarray, micro: int) -> dict:
    """Tokens and attention work of the micro-batches of `order` as `PairCollator` lays them out, padded and
    padding-free (whole micro-batches only; token ids are zeros, only the shapes matter)."""
    import pyarrow as pa

    from repro.data.batching import PairCollator

    padded, free = PairCollator(0), PairCollator(0, padding_free=True)
    ids = pa.list_(pa.int32())
    zeros = np.zeros(int(max(chosen.max(), rejected.max())) * 2 * micro, dtype=np.int32)
    real = tokens_padded = tokens_free = 0
    att_need = att_padded = att_dense = 0
    idx = np.asarray(order, dtype=np.int64)
    for batch in idx[: len(idx) // micro * micro].reshape(-1, micro):
        cols = {}
        for name, lens in (("chosen_ids", chosen[batch]), ("rejected_ids", rejected[batch])):
            offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
            cols[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(zeros[: offsets[-1]]), type=ids)
        table = pa.table(cols)
        p, f = padded(table), free(table)
        lens = np.concatenate([chosen[batch], rejected[batch]])
        real += int(lens.sum())
        tokens_padded += p["input_ids"].numel()
        tokens_free += f["input_ids"].numel()
        att_need += int((lens ** 2).sum())
        att_padded += p["input_ids"].shape[0] * p["input_ids"].shape[1] ** 2
        att_dense += f["input_ids"].shape[1] ** 2
    return {"real_tokens": real, "padded": {"processed_tokens": tokens_padded, "efficiency": real / tokens_padded},
            "padding_free": {"processed_tokens": tokens_free, "efficiency": real / tokens_free},
            "attention_efficiency": {"padded": att_need / att_padded,
                                     "padding_free_dense_mask": att_need / att_dense}}


def epoch_order(kind: str, lengths: np.ndarray, micro: int, global_batch: int, seed: int, mega: int = 50):
    """The order of one epoch as the engine cuts it (whole global batches), for a sampler `kind`."""
    if kind == "grouped":
        order = length_grouped_order(lengths, micro, seed, mega=mega)
    elif kind == "random":
        order = np.random.default_rng(seed).permutation(len(lengths)).tolist()
    else:  # ideal_sorted
        order = np.argsort(-lengths, kind="stable").tolist()
    return order[: len(lengths) // global_batch * global_batch]


def measure(chosen: np.ndarray, rejected: np.ndarray, micro: int, global_batch: int, epochs: int,
            megas: list[int]) -> dict:
    lengths = np.maximum(chosen, rejected)
    out = {}
    for kind in ("grouped", "random", "ideal_sorted"):
        runs = [efficiency(epoch_order(kind, lengths, micro, global_batch, seed), chosen, rejected, micro)
                for seed in range(epochs if kind != "ideal_sorted" else 1)]
        real = sum(r["real_tokens"] for r in runs)
        out[kind] = {"efficiency": real / sum(r["processed_tokens"] for r in runs),
                     "per_epoch": [r["efficiency"] for r in runs],
                     "split_halves_efficiency": real / sum(r["split_halves_processed_tokens"] for r in runs)}
    out["pair_bound"] = {"efficiency": float((chosen + rejected).sum() / (2 * lengths.sum()))}
    # one epoch through the collator itself; its padded count must equal the arithmetic above
    out["collated_epoch0"] = {kind: collated(epoch_order(kind, lengths, micro, global_batch, 0), chosen, rejected,
                                             micro) for kind in ("grouped", "random")}
    assert out["collated_epoch0"]["grouped"]["padded"]["efficiency"] == out["grouped"]["per_epoch"][0]
    out["grouped_share_of_pair_bound"] = out["grouped"]["efficiency"] / out["pair_bound"]["efficiency"]
    out["grouped_by_mega"] = {}
    for mega in megas:
        runs = [efficiency(epoch_order("grouped", lengths, micro, global_batch, seed, mega), chosen, rejected, micro)
                for seed in range(epochs)]
        real, processed = (sum(r[k] for r in runs) for k in ("real_tokens", "processed_tokens"))
        out["grouped_by_mega"][str(mega)] = real / processed
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=81_973, help="Table 1's total")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--global-batch", type=int, default=128, help="the paper presets' global batch")
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=3, help="epoch seeds averaged")
    ap.add_argument("--megas", default="1,5,10,25,50,100,200,1000")
    ap.add_argument("--correlations", default="0,0.5,0.8", help="chosen/rejected log-length correlations")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "padding_efficiency.json")
    args = ap.parse_args()
    megas = [int(m) for m in args.megas.split(",")]
    t0 = time.perf_counter()
    results = []
    for rho in (float(x) for x in args.correlations.split(",")):
        chosen, rejected, counts = table1_lengths(args.pairs, rho=rho)
        keep = np.maximum(chosen, rejected) <= args.max_length
        chosen, rejected = chosen[keep], rejected[keep]
        res = measure(chosen, rejected, args.micro_batch, args.global_batch, args.epochs, megas)
        results.append({"chosen_rejected_correlation": rho, "pairs": int(keep.sum()),
                        "dropped_over_max_length": int((~keep).sum()),
                        "mean_tokens_per_conversation": float((chosen.mean() + rejected.mean()) / 2),
                        "mean_tokens_per_pair": float((chosen + rejected).mean()), **res})
        g, r = res["grouped"]["efficiency"], res["random"]["efficiency"]
        print(f"rho={rho}: grouped {g:.4f}  random {r:.4f}  ideal sorted {res['ideal_sorted']['efficiency']:.4f}  "
              f"pair bound {res['pair_bound']['efficiency']:.4f}  grouped with halves padded apart "
              f"{res['grouped']['split_halves_efficiency']:.4f}  by mega "
              + ", ".join(f"{m}: {v:.4f}" for m, v in res["grouped_by_mega"].items()), file=sys.stderr)
        for kind, c in res["collated_epoch0"].items():
            print(f"  collated, {kind}: padded {c['padded']['efficiency']:.4f}, padding-free "
                  f"{c['padding_free']['efficiency']:.4f}; attention work needed/computed: padded "
                  f"{c['attention_efficiency']['padded']:.4f}, padding-free with a dense mask "
                  f"{c['attention_efficiency']['padding_free_dense_mask']:.4f}", file=sys.stderr)
    out = {"command": "python benchmarks/padding_efficiency.py " + " ".join(sys.argv[1:]),
           "goal": ">= 0.95 real/processed tokens at micro-batch 8",
           "setup": {"pairs": args.pairs, "micro_batch": args.micro_batch, "global_batch": args.global_batch,
                     "max_length": args.max_length, "epochs": args.epochs, "table1": TABLE1,
                     "prompt_gamma_shape": PROMPT_SHAPE, "response_gamma_shape": RESPONSE_SHAPE,
                     "template_tokens_per_message": TEMPLATE_PER_MESSAGE, "sources": counts},
           "results": results, "seconds": time.perf_counter() - t0, "env": env_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
