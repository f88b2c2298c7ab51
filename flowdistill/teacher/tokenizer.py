"""Tokenizers for the teacher: a word-level one trained on the prompts (tiny backbones), the ST
special tokens for any Hugging Face tokenizer, and the prefix/suffix encoding both backends use.

A prompt is encoded as ``ids(prefix) + ids(suffix)`` (each without added special tokens, BOS
prepended to the prefix when the tokenizer has one). Encoding the two parts separately keeps the
prefix's ids identical in every prompt whatever the tokenizer's merges at the boundary, which
is what prefix KV reuse (HF backend) and prefix caching (vLLM) need.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from .prompts import SPECIAL_TOKENS

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
WORD_PATTERN = r" ?[^\W\d]+| ?\d|[^\s\w]|\s+"
# always in the vocabulary: every digit with and without a leading space, every ASCII mark
BASE_TEXT = ("0123456789 0 1 2 3 4 5 6 7 8 9 " + " ".join(string.punctuation) + " "
             + "".join(string.punctuation))


def train_word_tokenizer(corpus: Sequence[str], min_frequency: int = 1):
    """A word-level tokenizer trained on ``corpus`` with the ``tokenizers`` library.

    Pieces are a word with its leading space, a punctuation mark, or a single digit, where the
    first digit of a number keeps its leading space (" 41 7" -> " 4", "1", " 7"): any value is
    representable with twenty digit tokens and numbers stay separated. Returns a
    ``PreTrainedTokenizerFast`` with pad/unk/bos/eos and the ST tokens as special tokens.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    specials = [PAD, UNK, BOS, EOS, *SPECIAL_TOKENS]
    trainer = trainers.WordLevelTrainer(special_tokens=specials, min_frequency=min_frequency)
    tok.train_from_iterator([BASE_TEXT, *corpus], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK,
                                   bos_token=BOS, eos_token=EOS,
                                   additional_special_tokens=list(SPECIAL_TOKENS))


def add_st_tokens(tokenizer) -> int:
    """Add the ST tokens (and a pad token if missing) to a pretrained tokenizer; returns how many
    tokens were added."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    n = tokenizer.add_special_tokens({"additional_special_tokens": missing}) if missing else 0
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or SPECIAL_TOKENS[1]
    return n


def st_token_ids(tokenizer) -> dict[str, int]:
    """Ids of the ST tokens; raises if the tokenizer lacks one."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks the ST tokens {missing}; call add_st_tokens first")
    return {t: int(vocab[t]) for t in SPECIAL_TOKENS}


def encode_prefix(tokenizer, prefix: str) -> list[int]:
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id)] + list(ids)
    return [int(i) for i in ids]


def encode_suffixes(tokenizer, suffixes: Sequence[str]) -> list[list[int]]:
    """Token ids of each suffix (no special tokens added). Uses the Rust tokenizer's batch
    encoder directly when there is one (the Python wrapper is ~50x slower per text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [e.ids for e in backend.encode_batch(list(suffixes), add_special_tokens=False)]
    out = tokenizer(list(suffixes), add_special_tokens=False)["input_ids"]
    return [[int(i) for i in ids] for ids in out]
