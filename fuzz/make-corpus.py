#!/usr/bin/env python3
"""Writes the committed seed corpus fuzz/corpus/<target>/ from the repository's fixtures (see
fuzz/corpus/README.md for what each seed is). Deterministic: rerunning rewrites the same bytes.
Usage: fuzz/make-corpus.py   (from anywhere; paths are relative to the repository)."""
import glob
import json
import os
import shutil
import struct

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "fuzz", "corpus")


def repo(p):
    return os.path.join(REPO, p)


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, name, src):
    with open(repo(src), "rb") as f:
        put(target, name, f.read())


# ---------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(path):
    b = open(repo(path), "rb").read()
    (n,) = struct.unpack("<Q", b[:8])
    return json.loads(b[8 : 8 + n]), b[8 + n :]


def write_safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, off, data = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    text = json.dumps(header, separators=(",", ":"))
    while (8 + len(text)) % 8:
        text += " "
    return struct.pack("<Q", len(text)) + text.encode() + data


def small_tensors(path, max_numel, limit):
    header, data = read_safetensors(path)
    out = []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for d in e["shape"]:
            numel *= d
        if numel <= max_numel and len(out) < limit:
            b, en = e["data_offsets"]
            out.append((name, e["dtype"], e["shape"], data[b:en]))
    return header.get("__metadata__"), out


meta, ts = small_tensors("data/fixtures/oracles/mamba-tied-bias/model.safetensors", 100, 8)
put("safetensors_fuzz", "mamba-tied-bias.small.safetensors", write_safetensors(ts, meta))
meta, ts = small_tensors("data/models/demo-mamba/model.safetensors", 256, 3)
put("safetensors_fuzz", "demo-mamba.small.safetensors", write_safetensors(ts, meta))
header, data = read_safetensors("data/fixtures/tokenizer-oracle/gpt-neox-20b.wiki.test.ids.safetensors")
ids = []
for name, e in header.items():
    if name != "__metadata__":
        size = {"I32": 4, "I64": 8}[e["dtype"]]
        b = e["data_offsets"][0]
        ids.append((name, e["dtype"], [16], data[b : b + 16 * size]))
put("safetensors_fuzz", "token-ids.small.safetensors", write_safetensors(ids, header.get("__metadata__")))
# The header of a real checkpoint as it is, without its data (every offset out of range).
raw = open(repo("data/fixtures/oracles/mamba/model.safetensors"), "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
put("safetensors_fuzz", "oracle-mamba.header-only.safetensors", raw[: 8 + n])

# ---------------------------------------------------------------------------------------------
# GGUF

GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}


def read_gguf(path):
    b = open(repo(path), "rb").read()
    pos = 4
    ver, nt, nkv = struct.unpack_from("<IQQ", b, pos)
    pos += 20

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", b, pos)
        pos += 8
        s = b[pos : pos + n]
        pos += n
        return s

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, pos)
            pos += 12
            return (et, [value(et) for _ in range(n)])
        f = "<" + GGUF_SCALAR[t]
        (v,) = struct.unpack_from(f, b, pos)
        pos += struct.calcsize(f)
        return v

    kv = []
    for _ in range(nkv):
        k = string()
        (t,) = struct.unpack_from("<I", b, pos)
        pos += 4
        kv.append((k.decode(), t, value(t)))
    return kv


def gguf_bytes(kv, tensors, alignment=32):
    """kv: list of (key, type, value); tensors: list of (name, ne, ggml type, data)."""

    def s(x):
        if isinstance(x, str):
            x = x.encode()
        return struct.pack("<Q", len(x)) + x

    def v(t, x):
        if t == 8:
            return s(x)
        if t == 9:
            et, items = x
            return struct.pack("<IQ", et, len(items)) + b"".join(v(et, i) for i in items)
        return struct.pack("<" + GGUF_SCALAR[t], x)

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, t, x in kv:
        out += s(k) + struct.pack("<I", t) + v(t, x)
    off, blobs = 0, []
    for name, ne, gt, data in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", gt, off)
        pad = (-len(data)) % alignment
        blobs.append(data + b"\0" * pad)
        off += len(data) + pad
    out += b"\0" * ((-len(out)) % alignment)
    return out + b"".join(blobs)


def f32(n, scale=0.01):
    return b"".join(struct.pack("<f", ((i * 37) % 17 - 8) * scale) for i in range(n))


# A llama.cpp "mamba" file (as convert_hf_to_gguf.py + llama-quantize write it, no kllens.* keys)
# shrunk to one layer of width 32 and 260 tokens: the keys and tokenizer.ggml.* of the llama.cpp
# fixture, the tokens / merges cut to the first 260 ids.
kv = read_gguf("data/fixtures/llamacpp/demo-mamba.Q4_K_M.imatrix.gguf")
n_vocab, H, I, N, R, K = 260, 32, 16, 4, 2, 4
dims = {"mamba.embedding_length": H, "mamba.block_count": 1, "mamba.ssm.inner_size": I,
        "mamba.ssm.state_size": N, "mamba.ssm.time_step_rank": R, "mamba.ssm.conv_kernel": K}
small_kv = []
tokens = None
for k, t, x in kv:
    if k.startswith("kllens.") or k.startswith("quantize."):
        continue
    if k in dims:
        x = dims[k]
    if k == "tokenizer.ggml.tokens":
        tokens = set(x[1][:n_vocab])
        x = (x[0], x[1][:n_vocab])
    if k == "tokenizer.ggml.token_type":
        x = (x[0], x[1][:n_vocab])
    if k == "tokenizer.ggml.merges":
        keep = []
        for m in x[1]:
            a, _, b = m.partition(b" ")
            if a in tokens and b in tokens and a + b in tokens:
                keep.append(m)
        x = (x[0], keep)
    small_kv.append((k, t, x))


def q8_0(n):
    blocks = b""
    for _ in range(n // 32):
        blocks += struct.pack("<H", 0x2000) + bytes((i * 7) % 256 for i in range(32))
    return blocks


def q4_0(n):
    return b"".join(struct.pack("<H", 0x2000) + bytes((i * 11) % 256 for i in range(16)) for _ in range(n // 32))


tensors = [
    ("token_embd.weight", [H, n_vocab], 8, q8_0(H * n_vocab)),
    ("output_norm.weight", [H], 0, f32(H)),
    ("blk.0.attn_norm.weight", [H], 0, f32(H)),
    ("blk.0.ssm_a", [N, I], 0, f32(N * I)),
    ("blk.0.ssm_conv1d.bias", [I], 0, f32(I)),
    ("blk.0.ssm_conv1d.weight", [K, I], 0, f32(K * I)),
    ("blk.0.ssm_d", [I], 0, f32(I)),
    ("blk.0.ssm_dt.bias", [I], 0, f32(I)),
    ("blk.0.ssm_dt.weight", [R, I], 1, b"\0\x3c" * (R * I)),
    ("blk.0.ssm_in.weight", [H, 2 * I], 2, q4_0(H * 2 * I)),
    ("blk.0.ssm_out.weight", [I, H], 30, b"\x80\x3f" * (I * H)),
    ("blk.0.ssm_x.weight", [I, R + 2 * N], 0, f32(I * (R + 2 * N))),
]
put("gguf_fuzz", "llamacpp-mamba.small.gguf", gguf_bytes(small_kv, tensors))
copy("gguf_fuzz", "demo-mamba.imatrix.gguf", "data/fixtures/llamacpp/demo-mamba.imatrix.gguf")
copy("gguf_fuzz", "demo-mamba2.imatrix.gguf", "data/fixtures/llamacpp/demo-mamba2.imatrix.gguf")
put("gguf_fuzz", "every-value-type.gguf", gguf_bytes(
    [("general.alignment", 4, 64), ("u8", 0, 200), ("i8", 1, -3), ("u16", 2, 60000),
     ("i16", 3, -30000), ("u32", 4, 4000000000), ("i32", 5, -2000000000), ("f32", 6, 1.5),
     ("bool", 7, 1), ("string", 8, "text\twith\nescapes"), ("u64", 10, 2**63), ("i64", 11, -2**62),
     ("f64", 12, 2.5), ("array.u8", 9, (0, [1, 2, 3])), ("array.str", 9, (8, ["a", "", "ccc"])),
     ("array.f64", 9, (12, [1.0, -2.0])), ("array.bool", 9, (7, [0, 1]))],
    [("empty", [0], 0, b""), ("four", [4], 0, f32(4)), ("q", [32, 2], 8, q8_0(64))], alignment=64))

# ---------------------------------------------------------------------------------------------
# imatrix (llama.cpp imatrix GGUF files for the demo models the target loads)

copy("imatrix_fuzz", "demo-mamba.imatrix.gguf", "data/fixtures/llamacpp/demo-mamba.imatrix.gguf")
copy("imatrix_fuzz", "demo-mamba2.imatrix.gguf", "data/fixtures/llamacpp/demo-mamba2.imatrix.gguf")

# ---------------------------------------------------------------------------------------------
# config.json

for p in sorted(glob.glob(repo("data/models/demo-*/config.json"))):
    copy("config_fuzz", os.path.basename(os.path.dirname(p)) + ".config.json", os.path.relpath(p, REPO))
for p in sorted(glob.glob(repo("data/fixtures/oracles/*/config.json"))):
    copy("config_fuzz", "oracle-" + os.path.basename(os.path.dirname(p)) + ".config.json", os.path.relpath(p, REPO))
for p in sorted(glob.glob(repo("data/fixtures/real-configs/*.config.json"))):
    copy("config_fuzz", "real-" + os.path.basename(p), os.path.relpath(p, REPO))
# The families whose only oracle is llama.cpp: their random fixtures (tools/make_random_fixtures.py).
for p in sorted(glob.glob(repo("data/fixtures/*-tiny/config.json"))):
    copy("config_fuzz", "random-" + os.path.basename(os.path.dirname(p)) + ".config.json", os.path.relpath(p, REPO))

# ---------------------------------------------------------------------------------------------
# tokenizer.json (cut to the first ids: the vocabulary, the merges among them, added tokens)


def shrink_tokenizer(path, n_keep):
    j = json.load(open(repo(path), encoding="utf-8"))
    vocab = {t: i for t, i in j["model"]["vocab"].items() if i < n_keep}
    merges = []
    for m in j["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    j["model"]["vocab"] = vocab
    j["model"]["merges"] = merges
    return j


def dump(j):
    return json.dumps(j, ensure_ascii=False, indent=1)


neox_demo = shrink_tokenizer("data/models/demo-mamba/tokenizer.json", 400)
put("tokenizer_fuzz", "demo.small.tokenizer.json", dump(neox_demo))
neox = shrink_tokenizer("data/tokenizers/gpt-neox-20b.tokenizer.json", 400)
neox["added_tokens"] = [t for t in neox["added_tokens"] if t["id"] < 400 or t["id"] > 50250]
put("tokenizer_fuzz", "gpt-neox-20b.small.tokenizer.json", dump(neox))
hymba = shrink_tokenizer("data/tokenizers/llama-hymba.tokenizer.json", 600)
put("tokenizer_fuzz", "llama-hymba.small.tokenizer.json", dump(hymba))
# The same pieces in the other supported spellings: NFKC + Replace normalizers, a Sequence
# post-processor with a Bert one, added tokens with lstrip / rstrip / single_word.
variant = json.loads(json.dumps(hymba))
variant["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Prepend", "prepend": "▁"},
                         {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
variant["post_processor"] = {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
    {"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1]}]}
variant["added_tokens"].append({"id": 600, "content": "<x>", "single_word": True, "lstrip": True,
                                "rstrip": True, "normalized": True, "special": False})
variant["model"]["ignore_merges"] = True
put("tokenizer_fuzz", "llama-hymba.variant.tokenizer.json", dump(variant))
bytelevel = json.loads(json.dumps(neox_demo))
bytelevel["normalizer"] = {"type": "NFD"}
bytelevel["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}
bytelevel["post_processor"] = {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 0], "cls": ["<|padding|>", 1],
                               "trim_offsets": True, "add_prefix_space": True}
bytelevel["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in bytelevel["model"]["merges"]]
put("tokenizer_fuzz", "demo.variant.tokenizer.json", dump(bytelevel))

# ---------------------------------------------------------------------------------------------
# text to encode (first byte: bit 0 tokenizer, bit 1 add special tokens, bit 2 skip specials)

k = 0
for p in ["data/fixtures/tokenizer-oracle/gpt-neox-20b.samples.json",
          "data/fixtures/tokenizer-oracle/llama-hymba.samples.json"]:
    for s in json.load(open(repo(p), encoding="utf-8")):
        put("tokenize_fuzz", f"sample-{k:02d}", bytes([k % 8]) + s["text"].encode("utf-8"))
        k += 1
wiki = open(repo("data/wikitext-2-raw/wiki.test.raw"), "rb").read()[:2048]
put("tokenize_fuzz", "wiki.test.raw.head-0", b"\x00" + wiki)
put("tokenize_fuzz", "wiki.test.raw.head-1", b"\x03" + wiki)

# ---------------------------------------------------------------------------------------------
# PLAN.json and SENS.json, in the shapes plan_to_json / write_sensitivity_json write, with the
# component names of data/models/demo-mamba.

weights = read_safetensors("data/models/demo-mamba/model.safetensors")[0]
names = sorted(n for n, e in weights.items() if n != "__metadata__" and len(e["shape"]) >= 2)
schemes = ["int4:g32", "int8", "int3:g64:asym", "int2:g16:sym:s16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0",
           "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs", "q4_K:refined", "bf16", "f16", "f32"]
model = {"path": "data/models/demo-mamba", "arch": "mamba", "layers": 4, "params": 2800896}
plan = {"format": "kllens-plan", "version": 1, "model": model,
        "sensitivity": {"path": "out/sensitivity.json", "sha256": "0" * 64},
        "method": "optimal", "metric": "kl", "budget": {"avg_bits": 4.5, "max_bytes": None, "bytes": None},
        "components": {n: schemes[i % len(schemes)] for i, n in enumerate(names)},
        "predicted_metric_sum": 0.0123, "bytes": 1600000, "bits_per_weight": 4.57, "params": 2800896,
        "keep_rules": ["*.conv1d.*=bf16"], "optimal": {"nodes": 12}}
put("plan_fuzz", "demo-mamba.plan.json", json.dumps(plan, indent=1))
put("plan_fuzz", "minimal.plan.json", json.dumps(
    {"format": "kllens-plan", "version": 1, "model": {}, "method": "points", "metric": "mse",
     "components": {"a.weight": "q8_0"}, "predicted_metric_sum": 0, "bytes": 0, "bits_per_weight": 0,
     "params": 0}))


def ms(mean, se):
    return {"mean": mean, "stderr": se}


entries = []
for i, n in enumerate(names[:6]):
    for s in ["int4:g32", "q4_K"]:
        e = weights[n]
        entries.append({"component": n, "layer": i // 5, "role": n.split(".")[-2], "shape": e["shape"],
                        "params": e["shape"][0] * e["shape"][1], "scheme": s, "bytes": 1000 + i,
                        "seconds": 0.25,
                        "metrics": {"kl": ms(1e-3 * (i + 1), 1e-5), "rkl": ms(1e-3, 1e-5), "mse": ms(0.01, 0.001),
                                    "sqnr_db": ms(20.5, 0.1), "top1": ms(0.98, 0.001), "dnll": ms(0.002, 0.0001)}})
entries[-1]["stored"] = "q5_0"
sens = {"format": "kllens-sensitivity", "version": 1, "model": model,
        "calibration": {"text": "wiki.test.raw", "windows": 4, "ctx": 128},
        "schemes": ["int4:g32", "q4_K"], "sweep": {"prefix_reuse": True, "cache_bytes": 123},
        "entries": entries}
put("sensitivity_fuzz", "demo-mamba.sensitivity.json", json.dumps(sens, indent=1))


# ---------------------------------------------------------------------------------------------
# PyTorch checkpoints: the small archives of data/fixtures/mamba-ssm-native/bad (valid and
# hostile), and the native configs for config_fuzz.
for p in sorted(glob.glob(repo("data/fixtures/mamba-ssm-native/bad/*.bin"))):
    copy("pytorch_fuzz", os.path.basename(p), os.path.relpath(p, REPO))
for p in sorted(glob.glob(repo("data/fixtures/mamba-ssm-native/*/config.json"))):
    copy("config_fuzz", "native-" + os.path.basename(os.path.dirname(p)) + ".config.json", os.path.relpath(p, REPO))
