"""Batching: words -> sub-word pieces (with the piece -> word pooling index), padding, and the labels
a method trains on (made by its label encoders).

Length policy (the encoder takes at most ``max_length`` pieces, specials included, and never more
than its position table holds: :func:`fit_tokenizer_to_encoder` records that limit in the tokenizer's
``model_max_length`` and the collator clamps ``max_length`` to it):
- :func:`window_sentences` splits a long sentence at word boundaries into overlapping windows that
  fit, and :func:`rejoin_tags` puts the windows' predictions back together (each word from the window
  where it is farthest from a cut): nothing is lost, which is what evaluation and prediction need.
- :class:`SentenceCollator` never drops a sentence but, for one that does not fit, keeps the longest
  prefix of whole words that fits and warns with the running count of such sentences (training
  tolerates a cut tail; ``orig_lengths`` in the batch tells the caller what was cut).
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from mclner.data.iob2 import entities_to_iob2, repair_iob2
from mclner.data.sentence import CHAR_LANGS, CJK_CHAR, Sentence
from mclner.schema import IGNORE, tag_vocabulary


def _specials(tokenizer) -> Tuple[List[int], List[int]]:
    """Ids put before and after the pieces (``[CLS] … [SEP]`` or ``<s> … </s>``)."""
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return ([first] if first is not None else []), ([last] if last is not None else [])


def _lone_metaspace_id(tokenizer) -> Optional[int]:
    """Id of the bare SentencePiece word-start piece ``▁`` (XLM-R vocabularies), if any."""
    cached = getattr(tokenizer, "_mclner_metaspace", "unset")
    if cached != "unset":
        return cached
    mid = tokenizer.get_vocab().get("\u2581")
    try:
        tokenizer._mclner_metaspace = mid
    except AttributeError:  # pragma: no cover - tokenizers that forbid new attributes
        pass
    return mid


def word_pieces(tokenizer, words: Sequence[str], lang: Optional[str] = None) -> List[List[int]]:
    """Piece ids of each word, tokenised on its own (as ``is_split_into_words`` does). A word with no
    piece at all (e.g. a lone zero-width character) gets the unknown token, so that every word has at
    least one piece to pool.

    For languages written without spaces (zh, ja: one word per character) a SentencePiece tokenizer
    puts a bare ``▁`` piece before almost every character, doubling the sequence; such a leading bare
    ``▁`` is dropped (the encoder saw running Chinese text without it in pre-training). This applies to
    every word of a zh/ja sentence and to Han/kana words in any sentence, so text whose language is
    not given (``mclner predict`` without ``--lang``) is tokenised as in training."""
    if not words:
        return []
    ids = tokenizer(list(words), add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    char_lang = lang in CHAR_LANGS
    meta = _lone_metaspace_id(tokenizer)
    if meta is not None:
        ids = [p[1:] if len(p) > 1 and p[0] == meta and (char_lang or CJK_CHAR.match(w)) else p
               for p, w in zip(ids, words)]
    return [p if p else [unk] for p in ids]


def encoder_max_length(encoder) -> Optional[int]:
    """Pieces (specials included) that ``encoder``'s absolute position table can take, or None when it
    has none. Encoders whose position embedding has a padding index (RoBERTa, XLM-R, MPNet, …) count
    positions from ``padding_idx + 1``: 514 positions there take 512 pieces."""
    emb = getattr(encoder, "embeddings", None)
    pos = getattr(emb, "position_embeddings", None)
    if isinstance(pos, torch.nn.Embedding):
        offset = pos.padding_idx + 1 if pos.padding_idx is not None else 0
        return max(0, pos.num_embeddings - offset)
    n = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def tokenizer_max_length(tokenizer) -> Optional[int]:
    """The tokenizer's ``model_max_length`` when it is a real limit (transformers uses a huge number for
    "not set")."""
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else None


def fit_tokenizer_to_encoder(tokenizer, encoder) -> None:
    """Lower ``tokenizer.model_max_length`` to what ``encoder`` takes, so that every collator made from
    the tokenizer (and the checkpoint that saves it) respects the encoder's position limit."""
    limit = encoder_max_length(encoder)
    own = tokenizer_max_length(tokenizer)
    if limit is not None and (own is None or limit < own):
        tokenizer.model_max_length = limit


def usable_max_length(tokenizer, max_length: int) -> int:
    """``max_length`` clamped to the tokenizer's (encoder's) limit."""
    limit = tokenizer_max_length(tokenizer)
    return min(int(max_length), limit) if limit is not None else int(max_length)


def window_sentences(
    sentences: Sequence[Sentence], tokenizer, max_length: int = 512, overlap: Optional[int] = None
) -> Tuple[List[Sentence], List[Tuple[int, int]]]:
    """Split sentences whose pieces exceed ``max_length`` into windows at word boundaries; consecutive
    windows share about ``overlap`` pieces of whole words (default: a quarter of the room for pieces),
    so that every word near a cut is seen with context on both sides in one of them (see
    :func:`rejoin_tags`). A sentence that fits is one window holding the sentence itself.

    Returns the windows and, for each, ``(sentence index, first word)``. Tags of a window that starts
    inside an entity begin with ``B-`` there (each window is valid IOB2)."""
    pre, post = _specials(tokenizer)
    budget = max_length - len(pre) - len(post)
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room for pieces")
    overlap = budget // 4 if overlap is None else max(0, int(overlap))
    out: List[Sentence] = []
    where: List[Tuple[int, int]] = []
    for si, s in enumerate(sentences):
        # a word longer than the room alone is cut to its first pieces (as the collator does)
        counts = [min(len(p), budget) for p in word_pieces(tokenizer, s.tokens, s.lang)]
        if sum(counts) <= budget:
            out.append(s)
            where.append((si, 0))
            continue
        start = 0
        while True:
            used, end = 0, start
            while end < len(counts) and used + counts[end] <= budget:
                used += counts[end]
                end += 1
            tags = None
            if s.tags is not None:
                tags = list(s.tags[start:end])
                if tags and tags[0].startswith("I-"):
                    tags[0] = "B-" + tags[0][2:]
            out.append(Sentence(s.tokens[start:end], tags, s.lang))
            where.append((si, start))
            if end >= len(counts):
                break
            # the next window starts at the earliest word whose pieces up to ``end`` fit in the overlap
            nxt, shared = end, 0
            while nxt - 1 > start and shared + counts[nxt - 1] <= overlap:
                nxt -= 1
                shared += counts[nxt]
            start = nxt
    return out, where


def rejoin_tags(
    window_tags: Sequence[Sequence[str]], where: Sequence[Tuple[int, int]], n_sentences: int
) -> List[List[str]]:
    """Put per-window IOB2 tags back together into one sequence per original sentence.

    Where windows overlap, each word takes its tag from the window in which it lies farthest from a
    window edge that cuts the sentence (a sentence's own first and last word are no cut; ties go to the
    earlier window), i.e. the overlap is split in its middle. An entity crossing that point continues
    when both windows see it (``I-`` after the cut); the result is repaired to valid IOB2 (an ``I-X``
    that does not continue an X starts one)."""
    per: List[List[Tuple[int, Sequence[str]]]] = [[] for _ in range(n_sentences)]
    for tags, (si, start) in zip(window_tags, where):
        per[si].append((int(start), tags))
    out: List[List[str]] = []
    for si, wins in enumerate(per):
        wins.sort(key=lambda w: w[0])
        n = max((start + len(tags) for start, tags in wins), default=0)
        reach = 0
        for start, tags in wins:
            if start > reach:
                raise ValueError(f"window of sentence {si} starts at word {start}, after a gap (covered to {reach})")
            reach = max(reach, start + len(tags))
        best = [-1.0] * n
        merged = ["O"] * n
        for start, tags in wins:
            end = start + len(tags)
            for j, t in enumerate(tags):
                left = j if start > 0 else math.inf
                right = len(tags) - 1 - j if end < n else math.inf
                d = min(left, right)
                if d > best[start + j]:
                    best[start + j], merged[start + j] = d, t
        out.append(repair_iob2(merged))
    return out


class TagIds:
    """A label encoder: the IOB2 tag ids ``[n]`` of a sentence (ids = positions in
    `mclner.schema.tag_vocabulary`; tags of types the model does not know count as O)."""

    ndim = 1

    def __init__(self, types: Sequence[str]) -> None:
        self.tag_to_id = {t: i for i, t in enumerate(tag_vocabulary(types))}

    def __call__(self, tags: Sequence[str]) -> np.ndarray:
        return np.array([self.tag_to_id.get(t, 0) for t in tags], dtype=np.int64)


class SentenceCollator:
    """Collate :class:`Sentence` objects into encoder inputs and the labels a method trains on.

    Returns ``input_ids``/``attention_mask`` ``[B, L]``, ``word_index [B, L]`` (the word each piece
    belongs to; -1 for specials and padding), ``word_mask [B, N]`` (bool), ``lengths [B]`` (words seen
    by the model) and ``orig_lengths [B]`` (words in the sentence; larger when it was cut), and one
    tensor per entry of ``labels``: a label encoder (``ndim`` and a call ``tags -> array`` of shape
    ``[n] * ndim`` for a sentence's n kept tags, e.g. :class:`TagIds`) under the name it is returned
    as, ``[B, N, ...]`` int64, -100 on padding and for unlabelled sentences.
    """

    def __init__(self, tokenizer, max_length: int = 512, *, labels: Optional[Mapping[str, Any]] = None):
        self.tokenizer = tokenizer
        self.labels = dict(labels or {})
        self.max_length = usable_max_length(tokenizer, max_length)
        if self.max_length < int(max_length):
            # the encoder's position table is smaller: longer inputs would fail inside the encoder
            print(f"note: max_length {max_length} is more than the encoder takes; using {self.max_length} pieces "
                  "(specials included)", file=sys.stderr)
        self.pre, self.post = _specials(tokenizer)
        self.budget = self.max_length - len(self.pre) - len(self.post)
        if self.budget < 1:
            raise ValueError(f"max_length={max_length} leaves no room for pieces")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.truncated = 0  # sentences cut so far (the warning reports the running count)

    def __call__(self, batch: Sequence[Sentence]) -> Dict[str, torch.Tensor]:
        rows: List[List[int]] = []
        widx: List[List[int]] = []
        lengths: List[int] = []
        cut_now = 0
        for s in batch:
            pieces = word_pieces(self.tokenizer, s.tokens, s.lang)
            ids: List[int] = list(self.pre)
            owner: List[int] = [-1] * len(self.pre)
            used = 0
            n = 0
            for w, p in enumerate(pieces):
                p = p[: self.budget]  # a word longer than the room alone keeps its first pieces
                if used + len(p) > self.budget:
                    break
                ids.extend(p)
                owner.extend([w] * len(p))
                used += len(p)
                n += 1
            if n < len(s.tokens):
                cut_now += 1
            ids.extend(self.post)
            owner.extend([-1] * len(self.post))
            rows.append(ids)
            widx.append(owner)
            lengths.append(n)
        if cut_now:
            self.truncated += cut_now
            warnings.warn(
                f"{cut_now} sentence(s) in this batch exceed {self.max_length} pieces and were cut to the words "
                f"that fit ({self.truncated} so far); use mclner.data.collate.window_sentences to keep every word",
                stacklevel=2,
            )
        B = len(batch)
        L = max((len(r) for r in rows), default=0)
        N = max(lengths, default=0)
        input_ids = np.full((B, L), self.pad_id, dtype=np.int64)
        attention = np.zeros((B, L), dtype=np.int64)
        word_index = np.full((B, L), -1, dtype=np.int64)
        word_mask = np.zeros((B, N), dtype=bool)
        label_arrays = {k: np.full((B,) + (N,) * enc.ndim, IGNORE, dtype=np.int64) for k, enc in self.labels.items()}
        for b, (ids, owner, n, s) in enumerate(zip(rows, widx, lengths, batch)):
            input_ids[b, : len(ids)] = ids
            attention[b, : len(ids)] = 1
            word_index[b, : len(owner)] = owner
            word_mask[b, :n] = True
            if s.tags is not None and n:
                if len(s.tags) != len(s.tokens):
                    raise ValueError(f"sentence has {len(s.tokens)} tokens but {len(s.tags)} tags")
                tags = _cut_tags(s.tags, n)
                for k, enc in self.labels.items():
                    label_arrays[k][(b,) + (slice(0, n),) * enc.ndim] = enc(tags)
        out = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "word_index": torch.from_numpy(word_index),
            "word_mask": torch.from_numpy(word_mask),
            "lengths": torch.tensor(lengths, dtype=torch.long),
            "orig_lengths": torch.tensor([len(s.tokens) for s in batch], dtype=torch.long),
        }
        for k, arr in label_arrays.items():
            out[k] = torch.from_numpy(arr)
        return out


def tag_collator(tokenizer, label_map: Any, max_length: int = 512) -> SentenceCollator:
    """The collator of a tagger: ``tag_labels [B, N]`` (:class:`TagIds` of the label map's types)."""
    return SentenceCollator(tokenizer, max_length, labels={"tag_labels": TagIds(label_map.types)})


def _cut_tags(tags: Sequence[str], n: int) -> List[str]:
    """The first n tags (an entity cut at the end stays a valid, shorter entity)."""
    return list(tags[:n])


def pool_words(piece_states: torch.Tensor, word_index: torch.Tensor, n_words: int) -> torch.Tensor:
    """Mean of each word's piece states: ``[B, L, D]`` -> ``[B, N, D]`` (docs/METHOD.md §3 pooling).

    A reference for the model code: scatter-add over ``word_index`` (pieces with -1 are ignored)."""
    B, L, D = piece_states.shape
    valid = word_index >= 0
    idx = torch.where(valid, word_index, torch.full_like(word_index, n_words))  # spare slot for ignored
    out = piece_states.new_zeros(B, n_words + 1, D)
    out.scatter_add_(1, idx.unsqueeze(-1).expand(B, L, D), piece_states)
    cnt = piece_states.new_zeros(B, n_words + 1)
    cnt.scatter_add_(1, idx, valid.to(piece_states.dtype))
    return out[:, :n_words] / cnt[:, :n_words].clamp_min(1).unsqueeze(-1)


def pad_alignments(alignments: Sequence[Sequence[int]], n_src: int, cs_lengths: Sequence[int]) -> torch.Tensor:
    """``[B, n_src]`` long: for each source word its code-switched word index (from
    :meth:`CodeSwitcher.switch`), -1 where there is none, where the source word is padding, or where
    the counterpart was cut by the collator (index ≥ that sentence's ``lengths``)."""
    out = torch.full((len(alignments), n_src), -1, dtype=torch.long)
    for b, (al, m) in enumerate(zip(alignments, cs_lengths)):
        for i, a in enumerate(al[:n_src]):
            if 0 <= a < int(m):
                out[b, i] = a
    return out


def pad_spans(spans: Sequence[Sequence], n_src: int, cs_lengths: Sequence[int]) -> torch.Tensor:
    """``[B, n_src, 2]`` long: first and last code-switched word of each source word (the ``spans`` of
    :class:`SwitchResult`); -1 where there is none or it was cut. Map a THW pair (e, s) to
    (spans[e, 1], spans[s, 0]) and an NNW pair (k, k+1) to (spans[k, 1], spans[k+1, 0])."""
    out = torch.full((len(spans), n_src, 2), -1, dtype=torch.long)
    for b, (sp, m) in enumerate(zip(spans, cs_lengths)):
        for i, x in enumerate(sp[:n_src]):
            if x is not None and x[1] < int(m):
                out[b, i, 0], out[b, i, 1] = x[0], x[1]
    return out


def batch_iob2(entities: Sequence[Sequence[Tuple[int, int, str]]], orig_lengths: Sequence[int]) -> List[List[str]]:
    """IOB2 tags of decoded entities at each sentence's full length (cut words are tagged O)."""
    return [entities_to_iob2(e, int(n)) for e, n in zip(entities, orig_lengths)]


__all__ = [
    "IGNORE",
    "SentenceCollator",
    "TagIds",
    "batch_iob2",
    "encoder_max_length",
    "fit_tokenizer_to_encoder",
    "pad_alignments",
    "pad_spans",
    "pool_words",
    "rejoin_tags",
    "tag_collator",
    "tokenizer_max_length",
    "usable_max_length",
    "window_sentences",
    "word_pieces",
]
