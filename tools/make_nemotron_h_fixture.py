#!/usr/bin/env python3
"""Writes data/fixtures/nemotron_h-tiny: a small random Nemotron-H checkpoint (config.json,
model.safetensors) and the token ids llama.cpp's logits are computed for (input_ids.txt).

No Hugging Face reference can run here (no PyTorch), so llama.cpp is this family's oracle
(scripts/llamacpp-oracles). The weights are drawn at scales that make every part matter: norm
weights away from 1, non-zero conv biases, dt over [0.01, 0.5], so that a wrong norm grouping, a
missing bias or a misplaced split changes the logits by far more than the test's tolerance.
Python's standard library only; fixed seed.

  python3 tools/make_nemotron_h_fixture.py data/fixtures/nemotron_h-tiny
"""
import json
import math
import os
import random
import struct
import sys

out = sys.argv[1]
rng = random.Random(20261203)
H, V = 64, 320
PATTERN = "M*-M-M*-"
SSM_HEADS, SSM_HEAD_DIM, GROUPS, STATE, CONV = 8, 16, 2, 16, 4
HEADS, KV_HEADS, HEAD_DIM, FFN = 4, 2, 16, 96
INNER = SSM_HEADS * SSM_HEAD_DIM
CONV_DIM = INNER + 2 * GROUPS * STATE
config = {
    "architectures": ["NemotronHForCausalLM"],
    "model_type": "nemotron_h",
    "vocab_size": V,
    "hidden_size": H,
    "num_hidden_layers": len(PATTERN),
    "hybrid_override_pattern": PATTERN,
    "intermediate_size": FFN,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "mamba_num_heads": SSM_HEADS,
    "mamba_head_dim": SSM_HEAD_DIM,
    "n_groups": GROUPS,
    "ssm_state_size": STATE,
    "conv_kernel": CONV,
    "expand": 2,
    "use_conv_bias": True,
    "use_bias": False,
    "mamba_hidden_act": "silu",
    "mlp_hidden_act": "relu2",
    "attention_bias": False,
    "mlp_bias": False,
    "layer_norm_epsilon": 1e-5,
    "time_step_limit": [0.0, float("inf")],
    "chunk_size": 16,
    "tie_word_embeddings": False,
    "residual_in_fp32": False,
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

tensors = []  # (name, shape, values)


def add(name, shape, gen):
    n = 1
    for d in shape:
        n *= d
    tensors.append((name, shape, [gen(i) for i in range(n)]))


def normal(std, mean=0.0):
    return lambda i: rng.gauss(mean, std)


add("backbone.embeddings.weight", [V, H], normal(1.0))
for l, kind in enumerate(PATTERN):
    p = "backbone.layers.%d." % l
    add(p + "norm.weight", [H], normal(0.2, 1.0))
    m = p + "mixer."
    if kind == "M":
        add(m + "in_proj.weight", [INNER + CONV_DIM + SSM_HEADS, H], normal(0.15))
        add(m + "conv1d.weight", [CONV_DIM, 1, CONV], normal(0.3))
        add(m + "conv1d.bias", [CONV_DIM], normal(0.1))
        # dt_bias = softplus^-1(dt), dt log-uniform in [0.01, 0.5]
        def dt_bias(i):
            dt = math.exp(rng.uniform(math.log(0.01), math.log(0.5)))
            return dt + math.log(-math.expm1(-dt))
        add(m + "dt_bias", [SSM_HEADS], dt_bias)
        add(m + "A_log", [SSM_HEADS], lambda i: math.log(rng.uniform(1.0, 16.0)))
        add(m + "D", [SSM_HEADS], normal(0.3, 1.0))
        add(m + "norm.weight", [INNER], normal(0.2, 1.0))
        add(m + "out_proj.weight", [H, INNER], normal(0.1))
    elif kind == "*":
        add(m + "q_proj.weight", [HEADS * HEAD_DIM, H], normal(0.15))
        add(m + "k_proj.weight", [KV_HEADS * HEAD_DIM, H], normal(0.15))
        add(m + "v_proj.weight", [KV_HEADS * HEAD_DIM, H], normal(0.15))
        add(m + "o_proj.weight", [H, HEADS * HEAD_DIM], normal(0.15))
    else:
        add(m + "up_proj.weight", [FFN, H], normal(0.15))
        add(m + "down_proj.weight", [H, FFN], normal(0.1))
add("backbone.norm_f.weight", [H], normal(0.2, 1.0))
add("lm_head.weight", [V, H], normal(0.15))

header, offset = {"__metadata__": {"format": "pt", "generator": "tools/make_nemotron_h_fixture.py"}}, 0
for name, shape, values in tensors:
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * len(values)]}
    offset += 4 * len(values)
head = json.dumps(header, separators=(",", ":")).encode()
head += b" " * (-len(head) % 8)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head)
    for _, _, values in tensors:
        f.write(struct.pack("<%df" % len(values), *values))
with open(os.path.join(out, "config.json"), "w") as f:
    # Python writes inf as Infinity, as transformers 4.x does in real configs.
    f.write(json.dumps(config, indent=2) + "\n")
with open(os.path.join(out, "input_ids.txt"), "w") as f:
    for _ in range(2):
        f.write(",".join(str(rng.randrange(3, V)) for _ in range(13)) + "\n")
