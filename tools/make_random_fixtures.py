#!/usr/bin/env python3
"""Writes the random checkpoints of the families no Hugging Face reference can run here (no
PyTorch): data/fixtures/nemotron_h-tiny, granitehybrid-tiny and granitehybrid-moe-tiny, each a config.json,
a model.safetensors and the token ids llama.cpp's logits are computed for (input_ids.txt).
llama.cpp is these families' oracle (scripts/llamacpp-oracles).

The weights are drawn at scales that make every part matter: norm weights away from 1, non-zero
conv biases, dt over [0.01, 0.5], so that a wrong norm grouping, a missing bias, a multiplier
applied in the wrong place or a misplaced split changes the logits by far more than the tests'
tolerance. Python's standard library only; a fixed seed per family.

  python3 tools/make_random_fixtures.py nemotron_h data/fixtures/nemotron_h-tiny
  python3 tools/make_random_fixtures.py granitehybrid data/fixtures/granitehybrid-tiny
  python3 tools/make_random_fixtures.py granitehybrid-moe data/fixtures/granitehybrid-moe-tiny
"""
import json
import math
import os
import random
import struct
import sys

V = 320


class Checkpoint:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.tensors = []  # (name, shape, values)

    def add(self, name, shape, gen):
        n = 1
        for d in shape:
            n *= d
        self.tensors.append((name, shape, [gen(i) for i in range(n)]))

    def normal(self, std, mean=0.0):
        return lambda i: self.rng.gauss(mean, std)

    def mamba2_mixer(self, m, hidden, inner, heads, conv_dim, conv):
        rng = self.rng
        self.add(m + "in_proj.weight", [inner + conv_dim + heads, hidden], self.normal(0.15))
        self.add(m + "conv1d.weight", [conv_dim, 1, conv], self.normal(0.3))
        self.add(m + "conv1d.bias", [conv_dim], self.normal(0.1))

        def dt_bias(i):  # softplus^-1(dt), dt log-uniform in [0.01, 0.5]
            dt = math.exp(rng.uniform(math.log(0.01), math.log(0.5)))
            return dt + math.log(-math.expm1(-dt))

        self.add(m + "dt_bias", [heads], dt_bias)
        self.add(m + "A_log", [heads], lambda i: math.log(rng.uniform(1.0, 16.0)))
        self.add(m + "D", [heads], self.normal(0.3, 1.0))
        self.add(m + "norm.weight", [inner], self.normal(0.2, 1.0))
        self.add(m + "out_proj.weight", [hidden, inner], self.normal(0.1))

    def attention(self, a, hidden, heads, kv_heads, head_dim):
        self.add(a + "q_proj.weight", [heads * head_dim, hidden], self.normal(0.15))
        self.add(a + "k_proj.weight", [kv_heads * head_dim, hidden], self.normal(0.15))
        self.add(a + "v_proj.weight", [kv_heads * head_dim, hidden], self.normal(0.15))
        self.add(a + "o_proj.weight", [hidden, heads * head_dim], self.normal(0.15))

    def write(self, out, config, generator):
        header, offset = {"__metadata__": {"format": "pt", "generator": generator}}, 0
        for name, shape, values in self.tensors:
            header[name] = {"dtype": "F32", "shape": shape,
                            "data_offsets": [offset, offset + 4 * len(values)]}
            offset += 4 * len(values)
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(head)) + head)
            for _, _, values in self.tensors:
                f.write(struct.pack("<%df" % len(values), *values))
        with open(os.path.join(out, "config.json"), "w") as f:
            # Python writes inf as Infinity, as transformers 4.x does in real configs.
            f.write(json.dumps(config, indent=2) + "\n")
        with open(os.path.join(out, "input_ids.txt"), "w") as f:
            for _ in range(2):
                f.write(",".join(str(self.rng.randrange(3, V)) for _ in range(13)) + "\n")


def nemotron_h(out):
    H, PATTERN = 64, "M*-M-M*-"
    SSM_HEADS, SSM_HEAD_DIM, GROUPS, STATE, CONV = 8, 16, 2, 16, 4
    HEADS, KV_HEADS, HEAD_DIM, FFN = 4, 2, 16, 96
    INNER = SSM_HEADS * SSM_HEAD_DIM
    CONV_DIM = INNER + 2 * GROUPS * STATE
    config = {
        "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
        "vocab_size": V, "hidden_size": H, "num_hidden_layers": len(PATTERN),
        "hybrid_override_pattern": PATTERN, "intermediate_size": FFN,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "mamba_num_heads": SSM_HEADS, "mamba_head_dim": SSM_HEAD_DIM, "n_groups": GROUPS,
        "ssm_state_size": STATE, "conv_kernel": CONV, "expand": 2, "use_conv_bias": True,
        "use_bias": False, "mamba_hidden_act": "silu", "mlp_hidden_act": "relu2",
        "attention_bias": False, "mlp_bias": False, "layer_norm_epsilon": 1e-5,
        "time_step_limit": [0.0, float("inf")], "chunk_size": 16, "tie_word_embeddings": False,
        "residual_in_fp32": False, "max_position_embeddings": 4096, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0,
    }
    c = Checkpoint(20261203)
    c.add("backbone.embeddings.weight", [V, H], c.normal(1.0))
    for l, kind in enumerate(PATTERN):
        p = "backbone.layers.%d." % l
        c.add(p + "norm.weight", [H], c.normal(0.2, 1.0))
        if kind == "M":
            c.mamba2_mixer(p + "mixer.", H, INNER, SSM_HEADS, CONV_DIM, CONV)
        elif kind == "*":
            c.attention(p + "mixer.", H, HEADS, KV_HEADS, HEAD_DIM)
        else:
            c.add(p + "mixer.up_proj.weight", [FFN, H], c.normal(0.15))
            c.add(p + "mixer.down_proj.weight", [H, FFN], c.normal(0.1))
    c.add("backbone.norm_f.weight", [H], c.normal(0.2, 1.0))
    c.add("lm_head.weight", [V, H], c.normal(0.15))
    # The generator's first name, kept so that the file is byte for byte the one llama.cpp ran.
    c.write(out, config, "tools/make_nemotron_h_fixture.py")


def granitehybrid(out, moe=False):
    # Dense (num_local_experts 0) like granite-4.0-h-350m / -1b, with ties and multipliers of
    # the same kind (attention_multiplier = 1 / head_dim, no positional encoding), n_groups 2.
    # moe: routed experts as granite-4.0-h-tiny / -small (4 of them, top-2, beside the shared
    # MLP), four layers, an untied head.
    H, LAYERS = 64, ["mamba", "attention", "mamba", "mamba", "attention", "mamba"]
    if moe:
        LAYERS = ["mamba", "attention", "mamba", "mamba"]
    SSM_HEADS, GROUPS, STATE, CONV = 8, 2, 16, 4
    HEADS, KV_HEADS, FFN = 4, 2, 96
    EXPERTS, TOP_K, EXPERT_FFN = 4, 2, 48
    INNER, HEAD_DIM = 2 * H, H // HEADS
    CONV_DIM = INNER + 2 * GROUPS * STATE
    config = {
        "architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid",
        "vocab_size": V, "hidden_size": H, "num_hidden_layers": len(LAYERS), "layer_types": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "intermediate_size": FFN,
        "shared_intermediate_size": FFN, "num_local_experts": 0, "num_experts_per_tok": 0,
        "mamba_n_heads": SSM_HEADS, "mamba_d_head": "auto", "mamba_n_groups": GROUPS,
        "mamba_d_state": STATE, "mamba_d_conv": CONV, "mamba_expand": 2, "mamba_conv_bias": True,
        "mamba_proj_bias": False, "mamba_chunk_size": 16, "hidden_act": "silu",
        "attention_bias": False, "rms_norm_eps": 1e-5, "position_embedding_type": "nope",
        "rope_theta": 10000.0, "embedding_multiplier": 3.0, "residual_multiplier": 0.4,
        "attention_multiplier": 0.0625, "logits_scaling": 2.5, "tie_word_embeddings": True,
        "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }
    if moe:
        config.update({"num_local_experts": EXPERTS, "num_experts_per_tok": TOP_K,
                       "intermediate_size": EXPERT_FFN, "tie_word_embeddings": False,
                       "num_hidden_layers": len(LAYERS)})
    c = Checkpoint(20261205 if moe else 20261204)
    c.add("model.embed_tokens.weight", [V, H], c.normal(0.5))
    for l, kind in enumerate(LAYERS):
        p = "model.layers.%d." % l
        c.add(p + "input_layernorm.weight", [H], c.normal(0.2, 1.0))
        if kind == "mamba":
            c.mamba2_mixer(p + "mamba.", H, INNER, SSM_HEADS, CONV_DIM, CONV)
        else:
            c.attention(p + "self_attn.", H, HEADS, KV_HEADS, HEAD_DIM)
        c.add(p + "post_attention_layernorm.weight", [H], c.normal(0.2, 1.0))
        if moe:
            # a router of scale 1 so that the top-2 choice differs between tokens
            c.add(p + "block_sparse_moe.router.layer.weight", [EXPERTS, H], c.normal(1.0))
            c.add(p + "block_sparse_moe.input_linear.weight", [EXPERTS, 2 * EXPERT_FFN, H], c.normal(0.15))
            c.add(p + "block_sparse_moe.output_linear.weight", [EXPERTS, H, EXPERT_FFN], c.normal(0.1))
        c.add(p + "shared_mlp.input_linear.weight", [2 * FFN, H], c.normal(0.15))
        c.add(p + "shared_mlp.output_linear.weight", [H, FFN], c.normal(0.1))
    c.add("model.norm.weight", [H], c.normal(0.2, 1.0))
    if moe:
        c.add("lm_head.weight", [V, H], c.normal(0.15))
    c.write(out, config, "tools/make_random_fixtures.py granitehybrid" + ("-moe" if moe else ""))


{"nemotron_h": nemotron_h, "granitehybrid": granitehybrid,
 "granitehybrid-moe": lambda out: granitehybrid(out, moe=True)}[sys.argv[1]](sys.argv[2])
