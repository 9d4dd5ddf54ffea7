"""The built-in tokenizer: hashed words, no vocabulary file.

Lower-cased words and punctuation marks are mapped to ids by a stable hash
(CRC-32) modulo the vocabulary size, so any text tokenizes without a learned
vocabulary, the same way on every machine. Id 0 is padding, 1 marks the start
(its output is the pooled text feature), 2 the end. Captions longer than the
context are truncated; the tokenizer counts how many were.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

PAD, BOS, EOS = 0, 1, 2
_RESERVED = 3
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class HashedWordTokenizer:
    def __init__(self, vocab_size: int = 8192, context_length: int = 24) -> None:
        if vocab_size <= _RESERVED:
            raise ValueError(f"vocab_size must be > {_RESERVED}, got {vocab_size}")
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3, got {context_length}")
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.pad_token_id = PAD
        self.truncated = 0  # captions cut to fit the context so far

    def word_id(self, word: str) -> int:
        return _RESERVED + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - _RESERVED)

    @staticmethod
    def words(text: str) -> list[str]:
        """The lower-cased words and punctuation marks the tokenizer hashes."""
        return _WORD.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        ids = [self.word_id(w) for w in self.words(text)]
        room = self.context_length - 2
        if len(ids) > room:
            self.truncated += 1
            ids = ids[:room]
        return [BOS, *ids, EOS]

    def __call__(self, texts: Sequence[str]) -> Tensor:
        out = torch.full((len(texts), self.context_length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
