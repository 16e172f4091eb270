#!/usr/bin/env python3
# Tensor types and bytes of two GGUF files, by name: OURS THEIRS REFINED_JSON (a JSON list of
# tensor names compared by type and size only). Prints {"identical", "refined_same_type_and_size",
# "problems"}. Reads GGUF v3 directly (no gguf-py or numpy: neither is a Debian dependency here).
# Used by scripts/check-with-llamacpp.
import struct, sys, json
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
         20: (32, 18), 23: (256, 136), 30: (1, 2)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def tensors(path):
    b = open(path, 'rb').read()
    pos = 0
    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, b, pos); pos += struct.calcsize(fmt); return v[0]
    def string():
        nonlocal pos
        n = take('<Q'); s = b[pos:pos + n].decode(); pos += n; return s
    def skip(t):
        nonlocal pos
        if t == 8: string()
        elif t == 9:
            et, n = take('<I'), take('<Q')
            for _ in range(n): skip(et)
        else: pos += SCALAR[t]
    assert b[:4] == b'GGUF', path
    pos = 4; take('<I'); nt = take('<Q'); nkv = take('<Q')
    align = 32
    for _ in range(nkv):
        k = string(); t = take('<I')
        if k == 'general.alignment': align = struct.unpack_from('<I', b, pos)[0]
        skip(t)
    infos = []
    for _ in range(nt):
        name = string(); nd = take('<I'); dims = [take('<Q') for _ in range(nd)]
        infos.append((name, dims, take('<I'), take('<Q')))
    start = (pos + align - 1) // align * align
    out = {}
    for name, dims, t, off in infos:
        n = 1
        for d in dims: n *= d
        be, bb = BLOCK[t]
        out[name] = (t, b[start + off:start + off + n // be * bb])
    return out
ours, theirs, refined = tensors(sys.argv[1]), tensors(sys.argv[2]), set(json.loads(sys.argv[3]))
same = diff = 0
problems = []
for name, (t, data) in ours.items():
    if name not in theirs: problems.append(f'{name}: missing in llama-quantize output'); continue
    t2, data2 = theirs[name]
    if t != t2: problems.append(f'{name}: type {t} vs llama-quantize {t2}'); continue
    if len(data) != len(data2): problems.append(f'{name}: {len(data)} vs {len(data2)} bytes'); continue
    if name in refined: diff += 1; continue
    if data != data2: problems.append(f'{name}: bytes differ'); continue
    same += 1
extra = set(theirs) - set(ours)
if extra: problems.append(f'only in llama-quantize output: {sorted(extra)}')
print(json.dumps({'identical': same, 'refined_same_type_and_size': diff, 'problems': problems}))
