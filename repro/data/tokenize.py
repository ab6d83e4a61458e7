"""Chat-template rendering and pair tokenisation.

Render the whole conversation (prompt turns + the judged assistant turn) with the tokenizer's chat
template, then encode it *without* adding special tokens: the template already writes BOS, and letting
the tokenizer add another gives the doubled BOS the paper warns about. Pairs longer than `max_length`
are dropped and counted, never silently truncated (training); evaluation truncates from the left, as
the official RewardBench script does.
"""
from __future__ import annotations

from collections import Counter


class TokenizationError(ValueError):
    pass


def encode_conversation(tokenizer, messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        raise TokenizationError("chat template produced a doubled BOS")
    return ids


def encode_pair(tokenizer, prompt: list[dict], chosen: str, rejected: str) -> tuple[list[int], list[int]]:
    c = encode_conversation(tokenizer, prompt + [{"role": "assistant", "content": chosen}])
    r = encode_conversation(tokenizer, prompt + [{"role": "assistant", "content": rejected}])
    return c, r


def tokenize_pairs(tokenizer, pairs: list[dict], max_length: int) -> tuple[list[dict], Counter]:
    """[{"id", "chosen_ids", "rejected_ids"}] for pairs that fit in `max_length`; drops counted by reason."""
    out, drops = [], Counter()
    for p in pairs:
        c, r = encode_pair(tokenizer, p["prompt"], p["chosen"], p["rejected"])
        if max(len(c), len(r)) > max_length:
            drops[f"longer than max_length={max_length} tokens"] += 1
            continue
        out.append({"id": p["id"], "chosen_ids": c, "rejected_ids": r})
    return out, drops
