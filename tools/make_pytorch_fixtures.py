#!/usr/bin/env python3
"""Writes data/fixtures/mamba-ssm-native: mamba_ssm-format twins of three HF oracle checkpoints,
and small PyTorch archives that a loader must refuse.

PyTorch cannot be installed here (no PyPI), so the archives are written the way torch.save
(torch/serialization.py, _save with the zip writer) writes them, with Python's own pickle and
zipfile: the state dict is an OrderedDict with a _metadata attribute, pickled with protocol 2;
each tensor reduces to torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, OrderedDict()); each storage is the persistent id
('storage', torch.FloatStorage, key, 'cpu', numel) with its bytes in <prefix>/data/<key>, stored
uncompressed and 64-byte aligned; then <prefix>/byteorder, <prefix>/version and
<prefix>/.data/serialization_id. The globals are stand-ins registered under torch's module names,
so pickle writes the same GLOBAL opcodes torch's objects produce.

mamba_ssm's format (models/mixer_seq_simple.py, MambaLMHeadModel.save_pretrained): config.json is
its MambaConfig (json.dump(indent=4)); the state dict names the embedding backbone.embedding.weight
and, when tied, holds lm_head.weight as the same storage.

Usage: tools/make_pytorch_fixtures.py [REPO]   (standard library only)
"""
import collections
import json
import os
import pickle
import struct
import sys
import types
import zipfile

repo = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
out_root = os.path.join(repo, "data", "fixtures", "mamba-ssm-native")

# Stand-ins for torch's globals, under torch's names.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _global(module, obj):
    obj.__module__ = module.__name__
    setattr(module, obj.__name__, obj)
    return obj


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in")


_global(torch_utils, _rebuild_tensor_v2)


class FloatStorage:
    pass


FloatStorage.__qualname__ = "FloatStorage"
_global(torch, FloatStorage)


class Storage:
    def __init__(self, key, data):
        self.key, self.data = key, data  # data: little-endian float32 bytes


class Tensor:
    def __init__(self, storage, shape, offset=0, stride=None):
        self.storage, self.shape, self.offset = storage, tuple(shape), offset
        if stride is None:
            stride, acc = [], 1
            for d in reversed(self.shape):
                stride.insert(0, acc)
                acc *= d
        self.stride = tuple(stride)

    def __reduce_ex__(self, protocol):
        return (_rebuild_tensor_v2,
                (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def __init__(self, f, numel_override=None):
        super().__init__(f, protocol=2)
        self.numel_override = numel_override or {}

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            numel = self.numel_override.get(obj.key, len(obj.data) // 4)
            return ("storage", FloatStorage, obj.key, "cpu", numel)
        return None


def pickle_state_dict(state_dict, numel_override=None):
    import io
    buf = io.BytesIO()
    TorchPickler(buf, numel_override).dump(state_dict)
    return buf.getvalue()


def write_archive(path, prefix, pickle_bytes, storages, byteorder="little", compress_data=False):
    """storages: key -> bytes. Records in torch's order, data 64-byte aligned as torch aligns."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        def record(name, data, compress=False):
            info = zipfile.ZipInfo(prefix + "/" + name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            header_at = zf.fp.tell()
            start = header_at + 30 + len(info.filename.encode())
            pad = (-(start + 4)) % 64  # the 'FB' extra field torch pads with: id, length, padding
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            zf.writestr(info, data)

        record("data.pkl", pickle_bytes)
        if byteorder is not None:
            record("byteorder", byteorder.encode())
        for key in sorted(storages, key=int):
            record("data/" + key, storages[key], compress_data)
        record("version", b"3\n")
        record(".data/serialization_id", b"1234567890123456789012345678901234567890")


def read_safetensors(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    header.pop("__metadata__", None)
    out = collections.OrderedDict()
    for name in sorted(header):
        t = header[name]
        assert t["dtype"] == "F32", name
        s, e = t["data_offsets"]
        out[name] = (t["shape"], b[8 + n + s:8 + n + e])
    return out


def native_state_dict(hf_tensors, tied):
    """mamba_ssm's state dict of an HF Mamba/Mamba-2 checkpoint: one storage per parameter, the
    embedding renamed, a tied head sharing the embedding's storage."""
    sd = collections.OrderedDict()
    storages = {}
    embedding = None
    for name, (shape, data) in hf_tensors.items():
        key = str(len(storages))
        storages[key] = data
        native = "backbone.embedding.weight" if name == "backbone.embeddings.weight" else name
        sd[native] = Tensor(Storage(key, data), shape)
        if native == "backbone.embedding.weight":
            embedding = sd[native]
    if tied:
        sd["lm_head.weight"] = Tensor(embedding.storage, embedding.shape)
    # state_dict() attaches the module versions as _metadata; torch.load keeps it as an attribute.
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("backbone", {"version": 1})])
    return sd, storages


def write_native(name, native_config, prefix):
    src = os.path.join(repo, "data", "fixtures", "oracles", name)
    hf = json.load(open(os.path.join(src, "config.json")))
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(native_config, f, indent=4)
    sd, storages = native_state_dict(read_safetensors(os.path.join(src, "model.safetensors")),
                                     hf["tie_word_embeddings"])
    write_archive(os.path.join(out, "pytorch_model.bin"), prefix, pickle_state_dict(sd), storages)


# The oracles' HF configs, as mamba_ssm configs of the same models. vocab_size is given unpadded
# (320 = 310 padded to a multiple of 16, or 317 to a multiple of 8), as the native checkpoints are.
write_native("mamba-tied-bias", {
    "d_model": 48, "d_intermediate": 0, "n_layer": 2, "vocab_size": 317,
    "ssm_cfg": {"d_state": 4, "d_conv": 4, "expand": 2, "dt_rank": 3, "bias": True, "conv_bias": True},
    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
    "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True}, "pytorch_model")
write_native("mamba2", {
    "d_model": 64, "d_intermediate": 0, "n_layer": 3, "vocab_size": 310,
    "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "ngroups": 2, "chunk_size": 16},
    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
    "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": False}, "archive")
write_native("mamba2-g1", {
    "d_model": 64, "d_intermediate": 0, "n_layer": 2, "vocab_size": 310,
    "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 32, "chunk_size": 8},
    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
    "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True}, "archive")

# Archives to refuse, each from the same two-tensor state dict.
bad = os.path.join(out_root, "bad")
os.makedirs(bad, exist_ok=True)
w = struct.pack("<6f", 1, 2, 3, 4, 5, 6)


def small(tensors, storages=None, numel_override=None):
    sd = collections.OrderedDict(tensors)
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return pickle_state_dict(sd, numel_override), storages or {"0": w}


def write_bad(name, pickle_bytes, storages, **kw):
    write_archive(os.path.join(bad, name), "archive", pickle_bytes, storages, **kw)


ok = Storage("0", w)
write_bad("valid.bin", *small([("w", Tensor(ok, [2, 3])), ("row", Tensor(ok, [3], offset=3))]))
write_bad("compressed.bin", *small([("w", Tensor(ok, [2, 3]))]), compress_data=True)
write_bad("big_endian.bin", *small([("w", Tensor(ok, [2, 3]))]), byteorder="big")
write_bad("non_contiguous.bin", *small([("w", Tensor(ok, [2, 3], stride=[1, 2]))]))
write_bad("past_storage.bin", *small([("w", Tensor(ok, [2, 3], offset=1))]))
write_bad("storage_size_lies.bin", *small([("w", Tensor(ok, [2, 3]))], numel_override={"0": 7}))
write_bad("missing_storage.bin", small([("w", Tensor(ok, [2, 3]))])[0], {"1": w})
write_bad("not_a_state_dict.bin", *small([("model", collections.OrderedDict([("w", Tensor(ok, [2, 3]))]))]))
evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R."  # os.system("echo")
write_bad("os_system.bin", evil, {"0": w})

# Byte-level lies, patched into copies of valid.bin.
valid = open(os.path.join(bad, "valid.bin"), "rb").read()
data_at = valid.index(w)
flipped = bytearray(valid)
flipped[data_at + 5] ^= 0x10
open(os.path.join(bad, "bad_crc.bin"), "wb").write(flipped)
# The central directory entry of archive/data/0 claims 4 more bytes than its local header.
name = b"archive/data/0"
entry = valid.index(name, valid.index(b"PK\x01\x02")) - 46
lying = bytearray(valid)
size = struct.unpack_from("<I", lying, entry + 24)[0]
struct.pack_into("<II", lying, entry + 20, size + 4, size + 4)
open(os.path.join(bad, "lying_size.bin"), "wb").write(lying)
open(os.path.join(bad, "truncated.bin"), "wb").write(valid[:len(valid) // 2])
# PyTorch < 1.6's format: pickles back to back, no archive.
open(os.path.join(bad, "legacy.bin"), "wb").write(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")
print("wrote", out_root)
