// plan/llama_mix: llama-quantize's type selection on synthetic tensor tables, with every expected
// type derived by hand from shared/docs/llamacpp-formats-and-hybrids.md §2 (use_more_bits, the
// attn_v and ffn_down counters, tied versus untied output, the shape fallback chains), against
// llama.cpp's own type-selection snapshots (tests/snapshots of llama.cpp at kLlamaQuantCommit,
// copied to data/fixtures/llamacpp/*.schema: Qwen3-0.6B and Llama-3.1-70B, every mix these rules
// know), and the --tensor-type-file recipe writer.
#include "plan/llama_mix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "quant/formats.h"
#include "quant/scheme.h"
#include "test_util.h"

namespace kllens {
namespace {

using test::error_of;

LlamaMixTensor tensor(std::string gguf, Role role, int layer, int64_t rows, int64_t cols) {
  LlamaMixTensor t;
  t.hf_name = "hf." + gguf;
  t.gguf_name = std::move(gguf);
  t.role = role;
  t.layer = layer;
  t.rows = rows;
  t.cols = cols;
  return t;
}

// A llama-layout dense transformer: every layer has attention and an MLP; every row a multiple
// of 256 unless `head_cols` says otherwise.
struct Dense {
  int layers = 8;
  bool tied = false;
  int64_t d = 512, ff = 1024, vocab = 1000;
  std::set<int> attention_layers;  // empty: all
  std::set<int> mlp_layers;        // empty: all
  std::vector<LlamaMixTensor> tensors() const {
    std::vector<LlamaMixTensor> v;
    v.push_back(tensor("token_embd.weight", Role::kEmbed, -1, vocab, d));
    v.push_back(tensor("output_norm.weight", Role::kNorm, -1, 1, d));
    if (!tied) v.push_back(tensor("output.weight", Role::kHead, -1, vocab, d));
    for (int l = 0; l < layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      v.push_back(tensor(b + "attn_norm.weight", Role::kNorm, l, 1, d));
      if (attention_layers.empty() || attention_layers.count(l)) {
        v.push_back(tensor(b + "attn_q.weight", Role::kQ, l, d, d));
        v.push_back(tensor(b + "attn_k.weight", Role::kK, l, d / 4, d));
        v.push_back(tensor(b + "attn_v.weight", Role::kV, l, d / 4, d));
        v.push_back(tensor(b + "attn_output.weight", Role::kO, l, d, d));
      } else {
        v.push_back(tensor(b + "ssm_in.weight", Role::kInProj, l, 4 * d, d));
        v.push_back(tensor(b + "ssm_conv1d.weight", Role::kConv1d, l, 2 * d, 4));
        v.push_back(tensor(b + "ssm_out.weight", Role::kOutProj, l, d, 2 * d));
      }
      if (mlp_layers.empty() || mlp_layers.count(l)) {
        v.push_back(tensor(b + "ffn_gate.weight", Role::kGate, l, ff, d));
        v.push_back(tensor(b + "ffn_up.weight", Role::kUp, l, ff, d));
        v.push_back(tensor(b + "ffn_down.weight", Role::kDown, l, d, ff));
      }
    }
    return v;
  }
  LlamaModelFacts facts() const {
    LlamaModelFacts f;
    f.arch = "llama";
    f.n_layer = layers;
    f.n_gqa = 4;
    f.tied_embeddings = tied;
    return f;
  }
};

std::map<std::string, std::string> by_gguf(const LlamaMixResult& r) {
  std::map<std::string, std::string> m;
  for (const auto& d : r.tensors) m[d.gguf_name] = d.type;
  return m;
}

LlamaMixResult run(const Dense& m, const std::string& mix, bool imatrix = false) {
  return llama_mix(m.tensors(), m.facts(), {mix, imatrix});
}

std::string blk(int l, const std::string& rest) { return "blk." + std::to_string(l) + "." + rest; }

TEST(LlamaMix, NamesAndBaseTypes) {
  EXPECT_EQ(llama_mix_base_type("Q4_K_M"), "q4_K");
  EXPECT_EQ(llama_mix_base_type("q3_k_m"), "q3_K");
  EXPECT_EQ(llama_mix_base_type("Q5_K_M"), "q5_K");
  EXPECT_EQ(llama_mix_base_type("Q6_K"), "q6_K");
  EXPECT_EQ(llama_mix_base_type("Q8_0"), "q8_0");
  EXPECT_EQ(llama_mix_base_type("IQ4_XS"), "iq4_xs");
  EXPECT_EQ(llama_mix_canonical("Q4_K"), "Q4_K_M");  // llama-quantize's alias
  EXPECT_THROW(llama_mix_base_type("Q4_K_X"), UsageError);
  EXPECT_THROW(llama_mix_base_type("IQ2_XXS"), UsageError);  // not reproduced
  for (const auto& n : llama_mix_names()) EXPECT_EQ(llama_mix_canonical(n), n);
  EXPECT_EQ(llama_type_name("Q4_k"), "q4_K");
  EXPECT_EQ(llama_type_block_size("q4_0"), 32);
  EXPECT_EQ(llama_type_block_size("iq4_nl"), 32);
  EXPECT_EQ(llama_type_block_size("q6_K"), 256);
  EXPECT_EQ(llama_type_block_size("iq4_xs"), 256);
  EXPECT_EQ(llama_type_block_size("f16"), 1);
  EXPECT_THROW(llama_type_block_size("int4:g32"), Error);
}

TEST(LlamaMix, ShapeFallbackChains) {
  std::string why;
  EXPECT_EQ(llama_shape_fallback("q4_K", 512, &why), "q4_K");
  EXPECT_EQ(why, "");
  EXPECT_EQ(llama_shape_fallback("q4_K", 96, &why), "q5_0");
  EXPECT_NE(why.find("q5_0"), std::string::npos);
  EXPECT_EQ(llama_shape_fallback("q5_K", 96), "q5_1");
  EXPECT_EQ(llama_shape_fallback("q6_K", 96), "q8_0");
  EXPECT_EQ(llama_shape_fallback("q3_K", 96), "q4_0");
  EXPECT_EQ(llama_shape_fallback("q2_K", 96), "q4_0");
  EXPECT_EQ(llama_shape_fallback("iq4_xs", 96), "iq4_nl");
  // Second step: the fallback's block of 32 does not divide the row either -> f16.
  EXPECT_EQ(llama_shape_fallback("q4_K", 16, &why), "f16");
  EXPECT_NE(why.find("f16"), std::string::npos);
  EXPECT_EQ(llama_shape_fallback("q6_K", 48), "f16");
  EXPECT_EQ(llama_shape_fallback("iq4_xs", 48), "f16");
  EXPECT_EQ(llama_shape_fallback("Q4_K", 96), "q5_0");  // any case in, ggml's spelling out
  // Block-32 types have no fallback: llama-quantize stops.
  for (const char* t : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl"}) {
    EXPECT_EQ(llama_shape_fallback(t, 64), t);
    const std::string e = error_of([&] { llama_shape_fallback(t, 48); });
    EXPECT_NE(e.find("no fallback"), std::string::npos) << t << ": " << e;
  }
  EXPECT_EQ(llama_shape_fallback("f16", 7), "f16");
  EXPECT_EQ(llama_shape_fallback("f32", 7), "f32");
  EXPECT_EQ(llama_shape_fallback("bf16", 7), "bf16");
  EXPECT_THROW(llama_shape_fallback("q7_K", 256), Error);
}

// quant/formats.h has the same chain for QuantSchemes (the sweep measures in it): both agree on
// every block format and every row length up to 1024, including where llama-quantize stops.
TEST(LlamaMix, ShapeFallbackAgreesWithQuantFormats) {
  for (const auto& f : block_formats()) {
    const QuantScheme s = QuantScheme::parse(f.name);
    for (int64_t ne0 = 1; ne0 <= 1024; ++ne0) {
      std::string mine, theirs;
      try {
        mine = llama_shape_fallback(f.name, ne0);
      } catch (const Error&) {
        mine = "stop";
      }
      try {
        theirs = llama_shape_fallback(s, ne0).to_string();
      } catch (const Error&) {
        theirs = "stop";
      }
      ASSERT_EQ(mine, theirs) << f.name << " ne0 " << ne0;
    }
  }
}

// use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2 -> {0, 3, 6, 7}.
TEST(LlamaMix, Q4KMUseMoreBitsOnAttnVAndFfnDown) {
  Dense m;
  const auto r = run(m, "Q4_K_M");
  EXPECT_EQ(r.base_type, "q4_K");
  EXPECT_EQ(r.n_attention_wv, 8);
  EXPECT_EQ(r.n_ffn_down, 8);
  const auto t = by_gguf(r);
  const std::set<int> more = {0, 3, 6, 7};
  for (int l = 0; l < 8; ++l) {
    const std::string want = more.count(l) ? "q6_K" : "q4_K";
    EXPECT_EQ(t.at(blk(l, "attn_v.weight")), want) << l;
    EXPECT_EQ(t.at(blk(l, "ffn_down.weight")), want) << l;
    for (const char* s : {"attn_q.weight", "attn_k.weight", "attn_output.weight", "ffn_gate.weight",
                          "ffn_up.weight"})
      EXPECT_EQ(t.at(blk(l, s)), "q4_K") << l << s;
    EXPECT_EQ(t.at(blk(l, "attn_norm.weight")), "f32");
  }
  EXPECT_EQ(t.at("output.weight"), "q6_K");
  EXPECT_EQ(t.at("token_embd.weight"), "q4_K");  // untied: the base type
  EXPECT_EQ(t.at("output_norm.weight"), "f32");
  const auto* v3 = r.find("hf.blk.3.attn_v.weight");
  ASSERT_NE(v3, nullptr);
  EXPECT_TRUE(v3->quantized);
  EXPECT_EQ(v3->category, "attn_v");
  EXPECT_NE(v3->reason.find("use_more_bits"), std::string::npos) << v3->reason;
  const auto* norm = r.find("hf.output_norm.weight");
  EXPECT_FALSE(norm->quantized);
  EXPECT_EQ(norm->category, "");
}

TEST(LlamaMix, Q5KMAndQ6KAndQ8_0) {
  Dense m;
  const std::set<int> more = {0, 3, 6, 7};
  const auto q5 = by_gguf(run(m, "Q5_K_M"));
  for (int l = 0; l < 8; ++l) {
    EXPECT_EQ(q5.at(blk(l, "attn_v.weight")), more.count(l) ? "q6_K" : "q5_K");
    EXPECT_EQ(q5.at(blk(l, "ffn_down.weight")), more.count(l) ? "q6_K" : "q5_K");
    EXPECT_EQ(q5.at(blk(l, "attn_output.weight")), "q5_K");
  }
  EXPECT_EQ(q5.at("output.weight"), "q6_K");
  EXPECT_EQ(q5.at("token_embd.weight"), "q5_K");
  // Q6_K and Q8_0 change nothing but the output rule.
  for (const auto& [mix, base] : {std::pair{"Q6_K", "q6_K"}, std::pair{"Q8_0", "q8_0"}}) {
    const auto r = run(m, mix);
    for (const auto& d : r.tensors) {
      if (!d.quantized) continue;
      EXPECT_EQ(d.type, base) << mix << " " << d.gguf_name;
    }
  }
}

TEST(LlamaMix, Q3KMCounters) {
  // 32 layers: ffn_down q5_K below n/16 = 2; attn_v q5_K for the first two attn_v tensors.
  Dense m;
  m.layers = 32;
  const auto t = by_gguf(run(m, "Q3_K_M"));
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(t.at(blk(l, "attn_v.weight")), l < 2 ? "q5_K" : "q4_K") << l;
    EXPECT_EQ(t.at(blk(l, "ffn_down.weight")), l < 2 ? "q5_K" : "q4_K") << l;
    EXPECT_EQ(t.at(blk(l, "attn_output.weight")), "q4_K");
    EXPECT_EQ(t.at(blk(l, "attn_q.weight")), "q3_K");
    EXPECT_EQ(t.at(blk(l, "ffn_up.weight")), "q3_K");
  }
  EXPECT_EQ(t.at("output.weight"), "q6_K");
  EXPECT_EQ(t.at("token_embd.weight"), "q3_K");
}

TEST(LlamaMix, WalkOrderIsLayerNumberThenName) {
  // 12 layers: blk.10 sorts after blk.9 (by number), not after blk.1 (by name), so the Q3_K_M
  // attn_v counter reaches #0 and #1 at layers 0 and 1.
  Dense m;
  m.layers = 12;
  const auto r = run(m, "Q3_K_M");
  const auto t = by_gguf(r);
  EXPECT_EQ(t.at(blk(0, "attn_v.weight")), "q5_K");
  EXPECT_EQ(t.at(blk(1, "attn_v.weight")), "q5_K");
  EXPECT_EQ(t.at(blk(10, "attn_v.weight")), "q4_K");
  ASSERT_GE(r.tensors.size(), 4u);
  // Non-block tensors first, by strcmp: output < output_norm < token_embd.
  EXPECT_EQ(r.tensors[0].gguf_name, "output.weight");
  EXPECT_EQ(r.tensors[1].gguf_name, "output_norm.weight");
  EXPECT_EQ(r.tensors[2].gguf_name, "token_embd.weight");
  std::vector<std::string> layer1;
  for (const auto& d : r.tensors)
    if (d.gguf_name.rfind("blk.1.", 0) == 0) layer1.push_back(d.gguf_name.substr(6));
  const std::vector<std::string> want = {"attn_k.weight", "attn_norm.weight", "attn_output.weight",
                                         "attn_q.weight", "attn_v.weight", "ffn_down.weight",
                                         "ffn_gate.weight", "ffn_up.weight"};
  EXPECT_EQ(layer1, want);
  int last_layer = -1;
  for (const auto& d : r.tensors) {
    EXPECT_GE(d.layer, last_layer) << d.gguf_name;
    last_layer = d.layer;
  }
}

TEST(LlamaMix, HybridCountsOnlyAttentionLayers) {
  // 8 blocks, attention (with an MLP) in 1, 3, 5, 7; SSM elsewhere. n_attention_wv = 4:
  // use_more_bits(i, 4) = i >= 3 or i % 3 == 2 -> attn_v #2, #3 (layers 5, 7). ffn_down: the
  // counter runs 0..3 with n = block_count = 8: use_more_bits(i, 8) for i in 0..3 -> #0, #3
  // (layers 1, 7). The SSM projections are "other" (base type); conv1d is copied.
  Dense m;
  m.attention_layers = m.mlp_layers = {1, 3, 5, 7};
  const auto r = run(m, "Q4_K_M");
  EXPECT_EQ(r.n_attention_wv, 4);
  const auto t = by_gguf(r);
  EXPECT_EQ(t.at(blk(1, "attn_v.weight")), "q4_K");
  EXPECT_EQ(t.at(blk(3, "attn_v.weight")), "q4_K");
  EXPECT_EQ(t.at(blk(5, "attn_v.weight")), "q6_K");
  EXPECT_EQ(t.at(blk(7, "attn_v.weight")), "q6_K");
  EXPECT_EQ(t.at(blk(1, "ffn_down.weight")), "q6_K");
  EXPECT_EQ(t.at(blk(3, "ffn_down.weight")), "q4_K");
  EXPECT_EQ(t.at(blk(5, "ffn_down.weight")), "q4_K");
  EXPECT_EQ(t.at(blk(7, "ffn_down.weight")), "q6_K");
  for (int l : {0, 2, 4, 6}) {
    EXPECT_EQ(t.at(blk(l, "ssm_in.weight")), "q4_K");
    EXPECT_EQ(t.at(blk(l, "ssm_out.weight")), "q4_K");
    EXPECT_EQ(t.at(blk(l, "ssm_conv1d.weight")), "f32");
    EXPECT_EQ(r.find("hf." + blk(l, "ssm_in.weight"))->category, "other");
    EXPECT_FALSE(r.find("hf." + blk(l, "ssm_conv1d.weight"))->quantized);
  }
  // Q3_K_M: the first two attn_v tensors (layers 1 and 3) get q5_K.
  const auto q3 = by_gguf(run(m, "Q3_K_M"));
  EXPECT_EQ(q3.at(blk(1, "attn_v.weight")), "q5_K");
  EXPECT_EQ(q3.at(blk(3, "attn_v.weight")), "q5_K");
  EXPECT_EQ(q3.at(blk(5, "attn_v.weight")), "q4_K");
  EXPECT_EQ(q3.at(blk(0, "ssm_in.weight")), "q3_K");
}

TEST(LlamaMix, TiedVersusUntiedOutput) {
  Dense m;
  m.tied = true;
  for (const auto& [mix, want] : {std::pair{"Q3_K_M", "q6_K"}, std::pair{"Q4_K_M", "q6_K"},
                                  std::pair{"Q5_K_M", "q6_K"}, std::pair{"Q6_K", "q6_K"},
                                  std::pair{"Q8_0", "q8_0"}, std::pair{"Q4_0", "q6_K"}}) {
    const auto r = run(m, mix);
    EXPECT_TRUE(r.tied_embeddings);
    EXPECT_EQ(by_gguf(r).at("token_embd.weight"), want) << mix;
  }
  m.tied = false;
  for (const auto& [mix, base] : {std::pair{"Q3_K_M", "q3_K"}, std::pair{"Q4_K_M", "q4_K"},
                                  std::pair{"Q5_K_M", "q5_K"}, std::pair{"Q8_0", "q8_0"}}) {
    const auto t = by_gguf(run(m, mix));
    EXPECT_EQ(t.at("token_embd.weight"), base) << mix;
    EXPECT_EQ(t.at("output.weight"), std::string(mix) == "Q8_0" ? "q8_0" : "q6_K") << mix;
  }
  // The facts must agree with the tensors.
  auto f = m.facts();
  f.tied_embeddings = true;
  EXPECT_NE(error_of([&] { llama_mix(m.tensors(), f, {"Q4_K_M"}); }).find("lm_head"), std::string::npos);
  Dense tied;
  tied.tied = true;
  auto g = tied.facts();
  g.tied_embeddings = false;
  EXPECT_NE(error_of([&] { llama_mix(tied.tensors(), g, {"Q4_K_M"}); }).find("tied"), std::string::npos);
}

TEST(LlamaMix, OutputRowLengthRule) {
  // ne0 2688 (= 10.5 x 256, a multiple of 32): under Q4_K_M the output rule sees ne0 % 256 != 0
  // and gives q8_0; under Q4_0 it sees ne0 % 32 == 0 and gives q6_K, which then falls back to
  // q8_0. Under Q8_0, ne0 100 leaves q8_0 with no fallback: llama-quantize stops.
  Dense m;
  m.tied = true;
  m.d = 2688;
  m.ff = 2048;
  auto r = run(m, "Q4_K_M");
  const auto* e = r.find("hf.token_embd.weight");
  EXPECT_EQ(e->rule_type, "q8_0");
  EXPECT_EQ(e->type, "q8_0");
  EXPECT_FALSE(e->fallback);
  // Every other d-wide row (attn_q/k/v, ffn_gate/up) falls back from q4_K to q5_0; ffn_down
  // (ne0 = ff) keeps its type.
  EXPECT_EQ(r.find("hf.blk.2.attn_q.weight")->type, "q5_0");
  EXPECT_TRUE(r.find("hf.blk.2.attn_q.weight")->fallback);
  EXPECT_EQ(r.find("hf.blk.0.attn_v.weight")->rule_type, "q6_K");
  EXPECT_EQ(r.find("hf.blk.0.attn_v.weight")->type, "q8_0");
  EXPECT_EQ(r.find("hf.blk.2.ffn_down.weight")->type, "q4_K");
  EXPECT_GT(r.n_fallback, 0);
  r = run(m, "Q4_0");
  e = r.find("hf.token_embd.weight");
  EXPECT_EQ(e->rule_type, "q6_K");
  EXPECT_EQ(e->type, "q8_0");
  EXPECT_TRUE(e->fallback);
  m.d = 100;
  const std::string err = error_of([&] { run(m, "Q8_0"); });
  EXPECT_NE(err.find("token_embd.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("no fallback"), std::string::npos) << err;
}

TEST(LlamaMix, MambaDtProjFallsBackToF16) {
  // Mamba-1: ssm_dt.weight has ne0 = dt_rank. 48 -> q4_K -> q5_0 -> f16; 64 -> q5_0.
  std::vector<LlamaMixTensor> v = {tensor("token_embd.weight", Role::kEmbed, -1, 1000, 256)};
  v.push_back(tensor("blk.0.ssm_dt.weight", Role::kDtProj, 0, 512, 48));
  v.push_back(tensor("blk.1.ssm_dt.weight", Role::kDtProj, 1, 512, 64));
  v.push_back(tensor("blk.0.ssm_x.weight", Role::kXProj, 0, 48 + 32, 512));
  v.push_back(tensor("blk.0.ssm_a", Role::kSsmA, 0, 512, 16));
  LlamaModelFacts f;
  f.arch = "mamba";
  f.n_layer = 2;
  f.tied_embeddings = true;
  const auto r = llama_mix(v, f, {"Q4_K_M"});
  EXPECT_EQ(r.find("hf.blk.0.ssm_dt.weight")->type, "f16");
  EXPECT_EQ(r.find("hf.blk.0.ssm_dt.weight")->rule_type, "q4_K");
  EXPECT_EQ(r.find("hf.blk.1.ssm_dt.weight")->type, "q5_0");
  EXPECT_EQ(r.find("hf.blk.0.ssm_x.weight")->type, "q4_K");
  EXPECT_EQ(r.find("hf.blk.0.ssm_a")->type, "f32");
  EXPECT_EQ(r.find("hf.token_embd.weight")->type, "q6_K");
  EXPECT_EQ(r.n_fallback, 2);
  // Q5_K_M: q5_K -> q5_1 (64) and -> f16 (48); Q6_K: q6_K -> q8_0 / f16; Q3_K_M: q3_K -> q4_0.
  EXPECT_EQ(llama_mix(v, f, {"Q5_K_M"}).find("hf.blk.1.ssm_dt.weight")->type, "q5_1");
  EXPECT_EQ(llama_mix(v, f, {"Q6_K"}).find("hf.blk.1.ssm_dt.weight")->type, "q8_0");
  EXPECT_EQ(llama_mix(v, f, {"Q6_K"}).find("hf.blk.0.ssm_dt.weight")->type, "f16");
  EXPECT_EQ(llama_mix(v, f, {"Q3_K_M"}).find("hf.blk.1.ssm_dt.weight")->type, "q4_0");
  EXPECT_EQ(llama_mix(v, f, {"IQ4_XS"}).find("hf.blk.1.ssm_dt.weight")->type, "iq4_nl");
  // Q8_0 on a row of 48: no fallback, llama-quantize stops.
  EXPECT_NE(error_of([&] { llama_mix(v, f, {"Q8_0"}); }).find("blk.0.ssm_dt.weight"), std::string::npos);
}

TEST(LlamaMix, ImatrixRules) {
  Dense m;
  m.layers = 16;  // n/8 = 2
  // IQ4_NL without an imatrix: ffn_down q5_K below n/8; with one: the base type. n_gqa >= 4:
  // attn_v q5_K either way.
  for (bool im : {false, true}) {
    const auto t = by_gguf(run(m, "IQ4_NL", im));
    for (int l = 0; l < 16; ++l) {
      EXPECT_EQ(t.at(blk(l, "ffn_down.weight")), !im && l < 2 ? "q5_K" : "iq4_nl") << l << im;
      EXPECT_EQ(t.at(blk(l, "attn_v.weight")), "q5_K");
      EXPECT_EQ(t.at(blk(l, "attn_q.weight")), "iq4_nl");
    }
    EXPECT_EQ(t.at("output.weight"), "q6_K");
  }
  // Q4_0 with an imatrix: ffn_down q4_1 below n/8; without: q4_0.
  for (bool im : {false, true}) {
    const auto t = by_gguf(run(m, "Q4_0", im));
    for (int l = 0; l < 16; ++l)
      EXPECT_EQ(t.at(blk(l, "ffn_down.weight")), im && l < 2 ? "q4_1" : "q4_0") << l << im;
    EXPECT_EQ(t.at(blk(0, "attn_v.weight")), "q4_0");
  }
  // n_gqa < 4 turns the IQ4 attn_v rule off (layer 0 an SSM layer: n_gqa = 0).
  auto f = m.facts();
  f.n_gqa = 0;
  EXPECT_EQ(by_gguf(llama_mix(m.tensors(), f, {"IQ4_XS"})).at(blk(0, "attn_v.weight")), "iq4_xs");
}

TEST(LlamaMix, EightExpertsAndLayerFromName) {
  // n_expert = 8: attn_v and attn_k q8_0, attn_output q5_K (Q4_K_M); ffn_down reads the block
  // number from its name, so every expert of a layer gets the same type.
  Dense m;
  m.mlp_layers = {99};  // no dense MLPs
  auto v = m.tensors();
  for (int l = 0; l < 8; ++l)
    for (int e = 0; e < 3; ++e)
      v.push_back(tensor(blk(l, "ffn_down_exps." + std::to_string(e) + ".weight"), Role::kDown, l, 512, 1024));
  v.push_back(tensor(blk(0, "ffn_gate_inp.weight"), Role::kRouter, 0, 8, 512));
  auto f = m.facts();
  f.n_expert = 8;
  const auto r = llama_mix(v, f, {"Q4_K_M"});
  const auto t = by_gguf(r);
  const std::set<int> more = {0, 3, 6, 7};
  for (int l = 0; l < 8; ++l) {
    EXPECT_EQ(t.at(blk(l, "attn_v.weight")), "q8_0");
    EXPECT_EQ(t.at(blk(l, "attn_k.weight")), "q8_0");
    EXPECT_EQ(t.at(blk(l, "attn_output.weight")), "q5_K");
    EXPECT_EQ(t.at(blk(l, "attn_q.weight")), "q4_K");
    for (int e = 0; e < 3; ++e)
      EXPECT_EQ(t.at(blk(l, "ffn_down_exps." + std::to_string(e) + ".weight")),
                more.count(l) ? "q6_K" : "q4_K") << l << " " << e;
  }
  EXPECT_EQ(t.at(blk(0, "ffn_gate_inp.weight")), "f32");
  EXPECT_FALSE(r.find("hf." + blk(0, "ffn_gate_inp.weight"))->quantized);
  // A layer outside [0, n_layer) where the rule reads it is an error, as in llama-quantize.
  v.push_back(tensor(blk(9, "ffn_down_exps.0.weight"), Role::kDown, 9, 512, 1024));
  EXPECT_NE(error_of([&] { llama_mix(v, f, {"Q4_K_M"}); }).find("bad layer 9"), std::string::npos);
}

TEST(LlamaMix, OwnLayoutWalksByKllensLayer) {
  // kllens' own layout (Hymba): HF names, no blk. prefix. The rules apply by role, ordered by
  // kllens' layer (so model.layers.10 comes after model.layers.9), and a note says so.
  std::vector<LlamaMixTensor> v;
  auto add = [&](std::string name, Role role, int layer, int64_t rows, int64_t cols) {
    LlamaMixTensor t;
    t.hf_name = t.gguf_name = std::move(name);
    t.role = role;
    t.layer = layer;
    t.rows = rows;
    t.cols = cols;
    v.push_back(t);
  };
  add("model.embed_tokens.weight", Role::kEmbed, -1, 1000, 256);
  add("model.memory_tokens", Role::kMetaTokens, -1, 128, 256);
  for (int l = 0; l < 12; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "mamba.in_proj.weight", Role::kInProj, l, 1024, 256);
    add(p + "mamba.conv1d.weight", Role::kConv1d, l, 512, 4);
    add(p + "self_attn.v_proj.weight", Role::kV, l, 64, 256);
  }
  LlamaModelFacts f;
  f.arch = "hymba";
  f.llama_cpp_layout = false;
  f.n_layer = 12;
  f.tied_embeddings = true;
  const auto r = llama_mix(v, f, {"Q3_K_M"});
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("hymba"), std::string::npos);
  EXPECT_NE(r.notes[0].find("by role"), std::string::npos);
  EXPECT_EQ(r.find("model.layers.0.self_attn.v_proj.weight")->type, "q5_K");
  EXPECT_EQ(r.find("model.layers.1.self_attn.v_proj.weight")->type, "q5_K");
  EXPECT_EQ(r.find("model.layers.10.self_attn.v_proj.weight")->type, "q4_K");
  EXPECT_EQ(r.find("model.layers.10.mamba.conv1d.weight")->type, "f32");
  EXPECT_EQ(r.find("model.memory_tokens")->type, "f32");
  EXPECT_EQ(r.find("model.embed_tokens.weight")->type, "q6_K");
  int last = -2;
  for (const auto& d : r.tensors) {
    EXPECT_GE(d.layer, last);
    last = d.layer;
  }
}

TEST(LlamaMix, FloatMixesAndInputErrors) {
  Dense m;
  m.tied = true;
  for (const auto& [mix, type] : {std::pair{"F16", "f16"}, std::pair{"BF16", "bf16"}, std::pair{"F32", "f32"}}) {
    const auto r = run(m, mix);
    for (const auto& d : r.tensors)
      EXPECT_EQ(d.type, d.quantized ? type : "f32") << mix << d.gguf_name;
  }
  auto v = m.tensors();
  v.push_back(v.front());
  EXPECT_NE(error_of([&] { llama_mix(v, m.facts(), {"Q4_K_M"}); }).find("two tensors"), std::string::npos);
  v = m.tensors();
  v[0].input_type = "int8";
  EXPECT_THROW(llama_mix(v, m.facts(), {"Q4_K_M"}), Error);
  EXPECT_THROW(llama_mix(m.tensors(), m.facts(), {"Q4_K_Z"}), UsageError);
}

// ---- llama.cpp's own snapshots ----

struct Snapshot {
  std::map<std::string, std::pair<std::string, std::map<std::string, std::string>>> sections;
};

Snapshot read_snapshot(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  Snapshot s;
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      const size_t close = line.find(']');
      current = line.substr(1, close - 1);
      s.sections[current].first = line.substr(close + 2);
      continue;
    }
    const size_t sp = line.rfind(' ');
    s.sections[current].second[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return s;
}

// A llama-layout transformer as llama.cpp's harness lists it (ggml ne0 = cols).
std::vector<LlamaMixTensor> transformer(int layers, int64_t d, int64_t q, int64_t kv, int64_t ff,
                                        int64_t vocab, bool qk_norm) {
  std::vector<LlamaMixTensor> v;
  v.push_back(tensor("token_embd.weight", Role::kEmbed, -1, vocab, d));
  v.push_back(tensor("output.weight", Role::kHead, -1, vocab, d));
  v.push_back(tensor("output_norm.weight", Role::kNorm, -1, 1, d));
  for (int l = 0; l < layers; ++l) {
    v.push_back(tensor(blk(l, "attn_norm.weight"), Role::kNorm, l, 1, d));
    v.push_back(tensor(blk(l, "attn_q.weight"), Role::kQ, l, q, d));
    v.push_back(tensor(blk(l, "attn_k.weight"), Role::kK, l, kv, d));
    v.push_back(tensor(blk(l, "attn_v.weight"), Role::kV, l, kv, d));
    v.push_back(tensor(blk(l, "attn_output.weight"), Role::kO, l, d, q));
    if (qk_norm) {
      v.push_back(tensor(blk(l, "attn_q_norm.weight"), Role::kNorm, l, 1, 128));
      v.push_back(tensor(blk(l, "attn_k_norm.weight"), Role::kNorm, l, 1, 128));
    }
    v.push_back(tensor(blk(l, "ffn_norm.weight"), Role::kNorm, l, 1, d));
    v.push_back(tensor(blk(l, "ffn_gate.weight"), Role::kGate, l, ff, d));
    v.push_back(tensor(blk(l, "ffn_up.weight"), Role::kUp, l, ff, d));
    v.push_back(tensor(blk(l, "ffn_down.weight"), Role::kDown, l, d, ff));
  }
  return v;
}

void expect_snapshot(const std::string& file, const std::vector<LlamaMixTensor>& tensors,
                     const LlamaModelFacts& facts) {
  const Snapshot snap = read_snapshot(test::repo_path("data/fixtures/llamacpp/" + file));
  int compared = 0;
  for (const auto& mix : llama_mix_names()) {
    const auto it = snap.sections.find(mix);
    ASSERT_NE(it, snap.sections.end()) << file << " has no [" << mix << "]";
    const auto& [base, overrides] = it->second;
    const auto r = llama_mix(tensors, facts, {mix, false});  // the harness runs without an imatrix
    EXPECT_EQ(r.base_type, base) << mix;
    int listed = 0;
    for (const auto& d : r.tensors) {
      if (!d.quantized) continue;
      const auto o = overrides.find(d.gguf_name);
      listed += o != overrides.end();
      EXPECT_EQ(d.type, o != overrides.end() ? o->second : base) << file << " [" << mix << "] " << d.gguf_name;
      ++compared;
    }
    EXPECT_EQ(listed, static_cast<int>(overrides.size())) << file << " [" << mix << "]";
  }
  EXPECT_GT(compared, 1000);
}

TEST(LlamaMix, MatchesLlamaCppSnapshotQwen3_0_6B) {
  // n_embd 1024, n_head 16 x 128, n_head_kv 8, n_ff 3072, 28 layers, untied, n_gqa 2.
  LlamaModelFacts f;
  f.arch = "qwen3";
  f.n_layer = 28;
  f.n_gqa = 2;
  expect_snapshot("qwen3-0.6b.schema", transformer(28, 1024, 2048, 1024, 3072, 151936, true), f);
}

TEST(LlamaMix, MatchesLlamaCppSnapshotLlama3_1_70B) {
  // n_embd 8192, n_head 64 x 128, n_head_kv 8, n_ff 28672, 80 layers: LLM_TYPE_70B.
  LlamaModelFacts f;
  f.arch = "llama";
  f.n_layer = 80;
  f.n_gqa = 8;
  f.llm_type_70b = true;
  auto v = transformer(80, 8192, 8192, 1024, 28672, 128256, false);
  v.push_back(tensor("rope_freqs.weight", Role::kNorm, -1, 1, 64));
  expect_snapshot("meta-llama-3.1-70b-instruct.schema", v, f);
}

// ---- recipe ----

TEST(LlamaRecipe, NameRegex) {
  EXPECT_EQ(llama_name_regex("blk.7.ssm_in.weight"), "^blk\\.7\\.ssm_in\\.weight$");
  EXPECT_EQ(llama_name_regex("a+b(c)[d]{e}|f?g*h^i$j\\k"),
            "^a\\+b\\(c\\)\\[d\\]\\{e\\}\\|f\\?g\\*h\\^i\\$j\\\\k$");
  EXPECT_NE(error_of([] { llama_name_regex("model.layers.0.mixer.A_log"); }).find("upper-case"),
            std::string::npos);
  EXPECT_THROW(llama_name_regex("a b"), Error);
  EXPECT_THROW(llama_name_regex("a=b"), Error);
  EXPECT_THROW(llama_name_regex(""), Error);
}

TEST(LlamaRecipe, WritesEveryQuantizedTensor) {
  std::vector<LlamaMixTensor> v = {tensor("token_embd.weight", Role::kEmbed, -1, 1000, 256)};
  for (int l = 0; l < 2; ++l) {
    v.push_back(tensor(blk(l, "ssm_in.weight"), Role::kInProj, l, 1024, 256));
    v.push_back(tensor(blk(l, "ssm_out.weight"), Role::kOutProj, l, 256, 512));
    v.push_back(tensor(blk(l, "ssm_conv1d.weight"), Role::kConv1d, l, 512, 4));
    v.push_back(tensor(blk(l, "ssm_a"), Role::kSsmA, l, 512, 16));
  }
  std::map<std::string, std::string> plan = {
      {"hf.token_embd.weight", "q8_0"},        {"hf.blk.0.ssm_in.weight", "q4_K"},
      {"hf.blk.0.ssm_out.weight", "Q6_K"},     {"hf.blk.1.ssm_in.weight", "q4_K"},
      {"hf.blk.1.ssm_out.weight", "f16"},      {"hf.blk.0.ssm_conv1d.weight", "bf16"},
      {"hf.blk.1.ssm_conv1d.weight", "f32"},
  };
  const LlamaRecipe r = llama_recipe(plan, v);
  EXPECT_EQ(r.text,
            "^token_embd\\.weight$=q8_0\n"
            "^blk\\.0\\.ssm_in\\.weight$=q4_K\n"
            "^blk\\.0\\.ssm_out\\.weight$=q6_K\n"
            "^blk\\.1\\.ssm_in\\.weight$=q4_K\n"
            "^blk\\.1\\.ssm_out\\.weight$=f16\n");
  EXPECT_EQ(r.base_type, "Q4_K_M");  // q4_K holds 2 x 256K parameters, q8_0 256K, q6_K 128K
  EXPECT_EQ(r.commit, std::string("3f545becc"));
  ASSERT_EQ(r.entries.size(), 5u);
  EXPECT_EQ(r.entries[1].hf_name, "hf.blk.0.ssm_in.weight");
  EXPECT_EQ(r.kept.size(), 4u);
  ASSERT_EQ(r.notes.size(), 1u);  // conv1d asked bf16, copied as f32
  EXPECT_NE(r.notes[0].find("blk.0.ssm_conv1d.weight"), std::string::npos);
  // Each token is NAME=TYPE with no whitespace inside (the file is read with >>).
  std::istringstream in(r.text);
  std::string tok;
  int n = 0;
  while (in >> tok) {
    EXPECT_EQ(std::count(tok.begin(), tok.end(), '='), 1) << tok;
    ++n;
  }
  EXPECT_EQ(n, 5);

  // Errors, each naming the tensor.
  auto bad = plan;
  bad["hf.blk.1.ssm_out.weight"] = "q4_K";  // fine: 512 % 256 == 0
  EXPECT_NO_THROW(llama_recipe(bad, v));
  bad["hf.blk.0.ssm_in.weight"] = "q4_K";
  v.push_back(tensor(blk(2, "ssm_dt.weight"), Role::kDtProj, 2, 512, 48));
  std::string e = error_of([&] { llama_recipe(bad, v); });
  EXPECT_NE(e.find("blk.2.ssm_dt.weight"), std::string::npos) << e;  // missing
  bad["hf.blk.2.ssm_dt.weight"] = "q4_K";
  e = error_of([&] { llama_recipe(bad, v); });
  EXPECT_NE(e.find("blk.2.ssm_dt.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("48"), std::string::npos) << e;
  EXPECT_NE(e.find("f16"), std::string::npos) << e;  // what llama-quantize would store instead
  bad["hf.blk.2.ssm_dt.weight"] = "q8_0";
  e = error_of([&] { llama_recipe(bad, v); });
  EXPECT_NE(e.find("stop"), std::string::npos) << e;
  bad["hf.blk.2.ssm_dt.weight"] = "f16";
  EXPECT_NO_THROW(llama_recipe(bad, v));
  bad["hf.blk.0.ssm_conv1d.weight"] = "q8_0";
  e = error_of([&] { llama_recipe(bad, v); });
  EXPECT_NE(e.find("never quantizes"), std::string::npos) << e;
  bad["hf.blk.0.ssm_conv1d.weight"] = "f32";
  bad["hf.nope"] = "q8_0";
  e = error_of([&] { llama_recipe(bad, v); });
  EXPECT_NE(e.find("hf.nope"), std::string::npos) << e;
  bad.erase("hf.nope");
  bad["hf.blk.0.ssm_in.weight"] = "int4:g32";
  e = error_of([&] { llama_recipe(bad, v); });
  EXPECT_NE(e.find("int4:g32"), std::string::npos) << e;
  // No quantized type at all: the base mix is Q8_0 (overrides need a quantized mix).
  std::map<std::string, std::string> floats;
  for (const auto& t : v)
    if (t.role != Role::kConv1d && t.role != Role::kSsmA) floats[t.hf_name] = "f16";
  EXPECT_EQ(llama_recipe(floats, v).base_type, "Q8_0");
}

TEST(LlamaRecipe, MixPlanRoundTrip) {
  // A Q4_K_M mix written as a recipe: each listed type is what llama_mix says the file holds.
  Dense m;
  m.d = 2688;
  m.ff = 2048;
  const auto r = run(m, "Q4_K_M");
  std::map<std::string, std::string> plan;
  for (const auto& d : r.tensors)
    if (d.quantized) plan[d.hf_name] = d.type;
  const auto rec = llama_recipe(plan, m.tensors());
  for (const auto& e : rec.entries) EXPECT_EQ(e.type, r.find(e.hf_name)->type);
  EXPECT_EQ(rec.entries.size(), plan.size());
}

}  // namespace
}  // namespace kllens
