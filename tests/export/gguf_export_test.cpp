// export/gguf_export: files written for the oracle and demo models, read back with the GGUF
// reader and checked against what llama.cpp demands (tensor names, shapes and metadata keys from
// shared/docs/llamacpp-gguf-notes.md §1.4 and §4.3, with every dimension computed here from the
// model's config.json) and against kllens' own quantizers (block bytes, exact repacks).
#include "export/gguf_export.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/dtype.h"
#include "core/error.h"
#include "io/gguf.h"
#include "models/model.h"
#include "models/synth.h"
#include "quant/quantize.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using gguf::GgmlType;
using json = nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

const Model& cached_model(const std::string& rel) {
  static std::map<std::string, std::unique_ptr<Model>> models;
  auto& m = models[rel];
  if (!m) m = load_model(test::repo_path(rel));
  return *m;
}

SchemeAssignment uniform(const Model& model, const std::string& scheme) {
  SchemeAssignment a;
  for (const Param* p : model.weights().components())
    if (p->role != Role::kConv1d) a[p->name] = QuantScheme::parse(scheme);
  return a;
}

std::vector<float> read_f32(const gguf::TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  gguf::to_f32(t.type, t.data, t.numel(), out.data());
  return out;
}

std::vector<uint8_t> bytes_of(const gguf::TensorInfo& t) {
  const auto* p = reinterpret_cast<const uint8_t*>(t.data);
  return {p, p + t.nbytes};
}

uint32_t u32(const gguf::File& f, const std::string& key) { return f.get_as<uint32_t>(key); }

const GgufFallback* find_fallback(const GgufExportResult& r, const std::string& tensor) {
  for (const auto& f : r.fallbacks)
    if (f.tensor == tensor) return &f;
  return nullptr;
}

class GgufExportTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("gguf-export"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string out(const std::string& name) { return (dir_ / name).string(); }
  fs::path dir_;
};

// Mamba-1 (notes §1.4, shapes as ggml {ne0, ne1}) for a model folder, from its config.json.
struct Mamba1Dims {
  int64_t n_embd, d_inner, d_state, d_conv, dt_rank, n_layer, n_vocab;
  bool tied;
};
Mamba1Dims mamba1_dims(const std::string& folder) {
  const json c = read_json(folder + "/config.json");
  Mamba1Dims d{};
  d.n_embd = c["hidden_size"];
  d.d_inner = c["intermediate_size"];
  d.d_state = c["state_size"];
  d.d_conv = c["conv_kernel"];
  d.dt_rank = c["time_step_rank"];
  d.n_layer = c["num_hidden_layers"];
  d.n_vocab = c["vocab_size"];
  d.tied = c.value("tie_word_embeddings", true);
  return d;
}

std::map<std::string, std::vector<int64_t>> mamba1_expected(const Mamba1Dims& d) {
  std::map<std::string, std::vector<int64_t>> e;
  e["token_embd.weight"] = {d.n_embd, d.n_vocab};
  e["output_norm.weight"] = {d.n_embd};
  if (!d.tied) e["output.weight"] = {d.n_embd, d.n_vocab};
  for (int64_t l = 0; l < d.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    e[b + "attn_norm.weight"] = {d.n_embd};
    e[b + "ssm_in.weight"] = {d.n_embd, 2 * d.d_inner};
    e[b + "ssm_conv1d.weight"] = {d.d_conv, d.d_inner};
    e[b + "ssm_conv1d.bias"] = {d.d_inner};
    e[b + "ssm_x.weight"] = {d.d_inner, d.dt_rank + 2 * d.d_state};
    e[b + "ssm_dt.weight"] = {d.dt_rank, d.d_inner};
    e[b + "ssm_dt.bias"] = {d.d_inner};
    e[b + "ssm_a"] = {d.d_state, d.d_inner};
    e[b + "ssm_d"] = {d.d_inner};
    e[b + "ssm_out.weight"] = {d.d_inner, d.n_embd};
  }
  return e;
}

void expect_tensor_set(const gguf::File& f, const std::map<std::string, std::vector<int64_t>>& e) {
  std::set<std::string> names;
  for (const auto& t : f.tensors()) {
    names.insert(t.name);
    auto it = e.find(t.name);
    if (it == e.end()) {
      ADD_FAILURE() << "unexpected tensor " << t.name;
      continue;
    }
    EXPECT_EQ(t.ne, it->second) << t.name;
  }
  for (const auto& [n, _] : e) EXPECT_TRUE(names.count(n)) << "missing " << n;
  EXPECT_EQ(f.tensors().size(), e.size());  // llama.cpp: "wrong number of tensors" otherwise
}

// ggml's reader: offsets are the running sum of padded sizes in info order.
void expect_ggml_layout(const gguf::File& f) {
  uint64_t off = 0;
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(t.offset, off) << t.name;
    off += (t.nbytes + f.alignment() - 1) / f.alignment() * f.alignment();
    EXPECT_LE(t.name.size(), 63u);
  }
}

// The F32 tensors of both Mamba layouts: norms, biases, D, ssm_a = -exp(A_log).
void expect_f32_params(const gguf::File& f, const Model& m, bool mamba2) {
  for (const auto& p : m.weights().all()) {
    if (p->is_component()) continue;
    std::string name, rest, l;
    if (p->name.rfind("backbone.layers.", 0) == 0) {
      rest = p->name.substr(16);
      l = rest.substr(0, rest.find('.'));
      rest = rest.substr(rest.find('.') + 1);
    }
    if (p->name == "backbone.norm_f.weight") name = "output_norm.weight";
    else if (rest == "norm.weight") name = "blk." + l + ".attn_norm.weight";
    else if (rest == "mixer.conv1d.bias") name = "blk." + l + ".ssm_conv1d.bias";
    else if (rest == "mixer.dt_proj.bias" || rest == "mixer.dt_bias") name = "blk." + l + ".ssm_dt.bias";
    else if (rest == "mixer.A_log") name = "blk." + l + ".ssm_a";
    else if (rest == "mixer.D") name = "blk." + l + ".ssm_d";
    else if (rest == "mixer.norm.weight") name = "blk." + l + ".ssm_norm.weight";
    else {
      ADD_FAILURE() << "unmapped " << p->name;
      continue;
    }
    const gguf::TensorInfo& t = f.tensor(name);
    EXPECT_EQ(t.type, GgmlType::kF32) << name;
    const auto v = read_f32(t);
    ASSERT_EQ(v.size(), p->value.size()) << name;
    for (size_t i = 0; i < v.size(); ++i) {
      const float want = rest == "mixer.A_log" ? -std::exp(p->value[i]) : p->value[i];
      ASSERT_EQ(v[i], want) << name << "[" << i << "]";
    }
    (void)mamba2;
  }
}

TEST_F(GgufExportTest, OracleMambaUniformQ8_0MatchesLlamaCpp) {
  const std::string folder = test::repo_path("data/fixtures/oracles/mamba");
  const Model& m = cached_model("data/fixtures/oracles/mamba");
  const GgufExportResult r = export_gguf(m, uniform(m, "q8_0"), out("m.gguf"));
  EXPECT_TRUE(r.llama_cpp_layout);
  EXPECT_EQ(r.architecture, "mamba");
  gguf::File f(out("m.gguf"));
  EXPECT_EQ(r.file_bytes, f.file_size());

  const Mamba1Dims d = mamba1_dims(folder);
  ASSERT_FALSE(d.tied);
  expect_tensor_set(f, mamba1_expected(d));
  expect_ggml_layout(f);
  EXPECT_EQ(f.get_as<std::string>("general.architecture"), "mamba");
  EXPECT_EQ(u32(f, "mamba.context_length"), 1u << 20);
  EXPECT_EQ(u32(f, "mamba.embedding_length"), d.n_embd);
  EXPECT_EQ(u32(f, "mamba.block_count"), d.n_layer);
  EXPECT_EQ(u32(f, "mamba.ssm.conv_kernel"), d.d_conv);
  EXPECT_EQ(u32(f, "mamba.ssm.inner_size"), d.d_inner);
  EXPECT_EQ(u32(f, "mamba.ssm.state_size"), d.d_state);
  EXPECT_EQ(u32(f, "mamba.ssm.time_step_rank"), d.dt_rank);
  EXPECT_EQ(f.get_as<float>("mamba.attention.layer_norm_rms_epsilon"),
            static_cast<float>(read_json(folder + "/config.json")["layer_norm_epsilon"].get<double>()));
  EXPECT_EQ(u32(f, "general.file_type"), 7u);  // MOSTLY_Q8_0
  EXPECT_EQ(u32(f, "general.quantization_version"), 2u);
  // The oracle has no tokenizer.json: a file without a vocabulary, as llama.cpp names it.
  EXPECT_EQ(f.get_as<std::string>("tokenizer.ggml.model"), "none");
  EXPECT_EQ(u32(f, "mamba.vocab_size"), static_cast<uint32_t>(d.n_vocab));
  EXPECT_EQ(f.find("tokenizer.ggml.tokens"), nullptr);
  bool noted = false;
  for (const auto& n : r.notes) noted = noted || n.find("tokenizer") != std::string::npos;
  EXPECT_TRUE(noted);

  for (int64_t l = 0; l < d.n_layer; ++l) {
    const std::string b = "backbone.layers." + std::to_string(l) + ".mixer.";
    const std::string g = "blk." + std::to_string(l) + ".";
    // Q8_0 blocks are the QTensor's bytes.
    for (const auto& [hf, name] : std::vector<std::pair<std::string, std::string>>{
             {b + "in_proj.weight", g + "ssm_in.weight"},
             {b + "x_proj.weight", g + "ssm_x.weight"},
             {b + "out_proj.weight", g + "ssm_out.weight"}}) {
      const Param& p = m.weights().get(hf);
      const gguf::TensorInfo& t = f.tensor(name);
      EXPECT_EQ(t.type, GgmlType::kQ8_0) << name;
      EXPECT_EQ(bytes_of(t), quantize(QuantScheme::parse("q8_0"), p.data(), p.rows(), p.cols()).data)
          << name;
      EXPECT_EQ(f.get_as<std::string>("kllens.scheme." + name), "q8_0");
    }
    // dt_proj rows of dt_rank (8) elements: no block type; F16, reported.
    const gguf::TensorInfo& dt = f.tensor(g + "ssm_dt.weight");
    EXPECT_EQ(dt.type, GgmlType::kF16);
    const GgufFallback* fb = find_fallback(r, g + "ssm_dt.weight");
    ASSERT_NE(fb, nullptr);
    EXPECT_EQ(fb->stored, "f16");
    EXPECT_FALSE(fb->exact);
    const Param& dtp = m.weights().get(b + "dt_proj.weight");
    const auto dtv = read_f32(dt);
    for (size_t i = 0; i < dtv.size(); ++i) ASSERT_EQ(dtv[i], f16_to_f32(f32_to_f16(dtp.value[i])));
    // conv1d: not in the uniform assignment, F32 (squeezed), the float weights.
    const gguf::TensorInfo& conv = f.tensor(g + "ssm_conv1d.weight");
    EXPECT_EQ(conv.type, GgmlType::kF32);
    EXPECT_EQ(read_f32(conv), m.weights().get(b + "conv1d.weight").value);
    EXPECT_EQ(f.get_as<std::string>("kllens.scheme." + g + "ssm_conv1d.weight"), "f32");
  }
  EXPECT_EQ(f.tensor("output.weight").type, GgmlType::kQ8_0);
  EXPECT_EQ(f.tensor("token_embd.weight").type, GgmlType::kQ8_0);
  expect_f32_params(f, m, false);
  const std::string cfg = test::read_file(folder + "/config.json");
  EXPECT_EQ(f.get_as<std::string>("kllens.hf_config"), cfg);
}

TEST_F(GgufExportTest, DemoMambaMixedPlanWithTokenizer) {
  const std::string folder = test::repo_path("data/models/demo-mamba");
  const Model& m = cached_model("data/models/demo-mamba");
  const Mamba1Dims d = mamba1_dims(folder);
  ASSERT_TRUE(d.tied);
  ASSERT_EQ(d.dt_rank % 32, 16);  // so dt_proj exercises the F16 fallback
  auto L = [](int l, const std::string& s) {
    return "backbone.layers." + std::to_string(l) + ".mixer." + s + ".weight";
  };
  SchemeAssignment a;
  a["backbone.embeddings.weight"] = QuantScheme::parse("q8_0");
  a[L(0, "in_proj")] = QuantScheme::parse("q4_0");
  a[L(0, "out_proj")] = QuantScheme::parse("int4:g32");         // -> Q4_0, same values
  a[L(0, "x_proj")] = QuantScheme::parse("int8:g32");           // -> Q8_0, same values
  a[L(0, "dt_proj")] = QuantScheme::parse("int4:g32");          // row 16 -> F16
  a[L(0, "conv1d")] = QuantScheme::parse("int8:g0");            // llama.cpp: F32
  a[L(1, "in_proj")] = QuantScheme::parse("int4:g128");         // -> Q4_0, same values
  a[L(1, "out_proj")] = QuantScheme::parse("int4:g16");         // -> Q4_0, re-quantized
  a[L(1, "x_proj")] = QuantScheme::parse("int8:g32:s32");       // -> Q8_0
  a[L(2, "in_proj")] = QuantScheme::parse("int4:g32:asym");     // -> Q4_1
  a[L(2, "out_proj")] = QuantScheme::parse("int6:g64");         // -> Q8_0, same values
  a[L(3, "in_proj")] = QuantScheme::parse("f16");
  const GgufExportResult r = export_gguf(m, a, out("d.gguf"));
  ASSERT_TRUE(r.llama_cpp_layout);
  gguf::File f(out("d.gguf"));
  expect_tensor_set(f, mamba1_expected(d));  // tied: no output.weight
  expect_ggml_layout(f);
  expect_f32_params(f, m, false);

  auto tensor_of = [&](int l, const std::string& gname) -> const gguf::TensorInfo& {
    return f.tensor("blk." + std::to_string(l) + "." + gname + ".weight");
  };
  // Exact repacks decode to the scheme's fake-quantized values.
  auto expect_same_values = [&](int l, const std::string& hf, const std::string& gname,
                                const std::string& scheme, GgmlType type) {
    const Param& p = m.weights().get(L(l, hf));
    const gguf::TensorInfo& t = tensor_of(l, gname);
    EXPECT_EQ(t.type, type) << t.name;
    std::vector<float> fq = p.value;
    fake_quantize(QuantScheme::parse(scheme), fq.data(), p.rows(), p.cols());
    EXPECT_EQ(read_f32(t), fq) << t.name;
    const GgufFallback* fb = find_fallback(r, t.name);
    ASSERT_NE(fb, nullptr) << t.name;
    EXPECT_TRUE(fb->exact) << t.name;
    EXPECT_EQ(fb->requested, QuantScheme::parse(scheme).to_string());
    EXPECT_EQ(f.get_as<std::string>("kllens.scheme." + t.name), QuantScheme::parse(scheme).to_string());
  };
  expect_same_values(0, "out_proj", "ssm_out", "int4:g32", GgmlType::kQ4_0);
  expect_same_values(0, "x_proj", "ssm_x", "int8:g32", GgmlType::kQ8_0);
  expect_same_values(1, "in_proj", "ssm_in", "int4:g128", GgmlType::kQ4_0);
  expect_same_values(2, "out_proj", "ssm_out", "int6:g64", GgmlType::kQ8_0);

  {  // q4_0 and q8_0: the QTensor blocks
    const Param& p = m.weights().get(L(0, "in_proj"));
    EXPECT_EQ(bytes_of(tensor_of(0, "ssm_in")),
              quantize(QuantScheme::parse("q4_0"), p.data(), p.rows(), p.cols()).data);
    const Param& e = m.weights().get("backbone.embeddings.weight");
    EXPECT_EQ(bytes_of(f.tensor("token_embd.weight")),
              quantize(QuantScheme::parse("q8_0"), e.data(), e.rows(), e.cols()).data);
    EXPECT_EQ(f.tensor("token_embd.weight").type, GgmlType::kQ8_0);
  }
  {  // int4:g16: groups straddle blocks -> ggml's q4_0 of the float weights, reported inexact
    const Param& p = m.weights().get(L(1, "out_proj"));
    EXPECT_EQ(tensor_of(1, "ssm_out").type, GgmlType::kQ4_0);
    EXPECT_EQ(bytes_of(tensor_of(1, "ssm_out")),
              quantize(QuantScheme::parse("q4_0"), p.data(), p.rows(), p.cols()).data);
    const GgufFallback* fb = find_fallback(r, "blk.1.ssm_out.weight");
    ASSERT_NE(fb, nullptr);
    EXPECT_FALSE(fb->exact);
  }
  {  // int8:g32:s32: exact only if every float32 scale is a float16 value
    const Param& p = m.weights().get(L(1, "x_proj"));
    const QTensor q = quantize(QuantScheme::parse("int8:g32:s32"), p.data(), p.rows(), p.cols());
    bool all_f16 = true;
    for (float s : q.scales_f32) all_f16 = all_f16 && f16_to_f32(f32_to_f16(s)) == s;
    const GgufFallback* fb = find_fallback(r, "blk.1.ssm_x.weight");
    ASSERT_NE(fb, nullptr);
    EXPECT_EQ(fb->exact, all_f16);
    EXPECT_EQ(tensor_of(1, "ssm_x").type, GgmlType::kQ8_0);
    if (!all_f16) {
      EXPECT_EQ(bytes_of(tensor_of(1, "ssm_x")),
                quantize(QuantScheme::parse("q8_0"), p.data(), p.rows(), p.cols()).data);
    }
  }
  {  // int4:g32:asym -> Q4_1; exact values when reported exact, else within one step
    const Param& p = m.weights().get(L(2, "in_proj"));
    const gguf::TensorInfo& t = tensor_of(2, "ssm_in");
    EXPECT_EQ(t.type, GgmlType::kQ4_1);
    const GgufFallback* fb = find_fallback(r, t.name);
    ASSERT_NE(fb, nullptr);
    const auto got = read_f32(t);
    std::vector<float> fq = p.value;
    fake_quantize(QuantScheme::parse("int4:g32:asym"), fq.data(), p.rows(), p.cols());
    if (fb->exact) {
      EXPECT_EQ(got, fq);
    } else {
      for (int64_t b = 0; b < p.numel() / 32; ++b) {
        float lo = p.value[b * 32], hi = lo;
        for (int j = 0; j < 32; ++j) {
          lo = std::min(lo, p.value[b * 32 + j]);
          hi = std::max(hi, p.value[b * 32 + j]);
        }
        for (int j = 0; j < 32; ++j)
          ASSERT_LE(std::fabs(got[b * 32 + j] - p.value[b * 32 + j]), (hi - lo) / 15 + 1e-3f);
      }
    }
  }
  {  // dt_proj: row length dt_rank = 16 -> F16 of the float weights
    const gguf::TensorInfo& t = tensor_of(0, "ssm_dt");
    EXPECT_EQ(t.type, GgmlType::kF16);
    const GgufFallback* fb = find_fallback(r, t.name);
    ASSERT_NE(fb, nullptr);
    EXPECT_EQ(fb->requested, "int4:g32:sym:s16");
  }
  {  // conv1d under int8:g0: llama.cpp needs F32; the fake-quantized values are stored
    const Param& p = m.weights().get(L(0, "conv1d"));
    const gguf::TensorInfo& t = tensor_of(0, "ssm_conv1d");
    EXPECT_EQ(t.type, GgmlType::kF32);
    std::vector<float> fq = p.value;
    fake_quantize(QuantScheme::parse("int8:g0"), fq.data(), p.rows(), p.cols());
    EXPECT_EQ(read_f32(t), fq);
    const GgufFallback* fb = find_fallback(r, t.name);
    ASSERT_NE(fb, nullptr);
    EXPECT_TRUE(fb->exact);
    EXPECT_EQ(tensor_of(1, "ssm_conv1d").type, GgmlType::kF32);  // unassigned: F32 too
  }
  {  // f16 keep, and unassigned components at the checkpoint's bf16
    const Param& p = m.weights().get(L(3, "in_proj"));
    EXPECT_EQ(tensor_of(3, "ssm_in").type, GgmlType::kF16);
    EXPECT_EQ(bytes_of(tensor_of(3, "ssm_in")),
              quantize(QuantScheme::parse("f16"), p.data(), p.rows(), p.cols()).data);
    const Param& q = m.weights().get(L(3, "out_proj"));
    EXPECT_EQ(q.source_dtype, DType::kBF16);
    const gguf::TensorInfo& t = tensor_of(3, "ssm_out");
    EXPECT_EQ(t.type, GgmlType::kBF16);
    EXPECT_EQ(read_f32(t), q.value);  // bf16 -> float -> bf16 is lossless
    EXPECT_EQ(f.get_as<std::string>("kllens.scheme.blk.3.ssm_out.weight"), "bf16");
  }
  EXPECT_EQ(find_fallback(r, "blk.3.ssm_out.weight"), nullptr);

  // Tokenizer keys, counted against tokenizer.json itself.
  const json tok = read_json(folder + "/tokenizer.json");
  const json cfg = read_json(folder + "/config.json");
  EXPECT_EQ(f.get_as<std::string>("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_as<std::string>("tokenizer.ggml.pre"), "gpt-2");
  const auto& tokens = f.get_as<std::vector<std::string>>("tokenizer.ggml.tokens");
  const auto& types = f.get_as<std::vector<int32_t>>("tokenizer.ggml.token_type");
  const auto& merges = f.get_as<std::vector<std::string>>("tokenizer.ggml.merges");
  ASSERT_EQ(static_cast<int64_t>(tokens.size()), d.n_vocab);  // == token_embd ne[1]
  EXPECT_EQ(f.tensor("token_embd.weight").ne[1], static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(types.size(), tokens.size());
  EXPECT_EQ(merges.size(), tok["model"]["merges"].size());
  const auto& m0 = tok["model"]["merges"][0];
  EXPECT_EQ(merges[0], m0.is_string() ? m0.get<std::string>()
                                      : m0[0].get<std::string>() + " " + m0[1].get<std::string>());
  for (const auto& [text, id] : tok["model"]["vocab"].items())
    ASSERT_EQ(tokens[id.get<size_t>()], text);
  for (const auto& at : tok["added_tokens"]) {
    EXPECT_EQ(tokens[at["id"].get<size_t>()], at["content"].get<std::string>());
    EXPECT_EQ(types[at["id"].get<size_t>()], at["special"].get<bool>() ? 3 : 4);
  }
  EXPECT_EQ(u32(f, "tokenizer.ggml.bos_token_id"), cfg["bos_token_id"].get<uint32_t>());
  EXPECT_EQ(u32(f, "tokenizer.ggml.eos_token_id"), cfg["eos_token_id"].get<uint32_t>());
  EXPECT_EQ(u32(f, "tokenizer.ggml.padding_token_id"), cfg["pad_token_id"].get<uint32_t>());
  EXPECT_FALSE(f.get_as<bool>("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(r.vocab_tokens, d.n_vocab);
}

// Mamba-2: notes §1.4 with conv_dim = d_inner + 2 n_group d_state, d_in_proj = d_inner +
// conv_dim + n_head, n_head = ssm.time_step_rank.
void check_mamba2(const std::string& rel, const std::string& path) {
  const std::string folder = test::repo_path(rel);
  const Model& m = cached_model(rel);
  const GgufExportResult r = export_gguf(m, uniform(m, "q8_0"), path);
  ASSERT_TRUE(r.llama_cpp_layout);
  EXPECT_EQ(r.architecture, "mamba2");
  gguf::File f(path);
  const json c = read_json(folder + "/config.json");
  const int64_t n_embd = c["hidden_size"], n_head = c["num_heads"], n_group = c["n_groups"];
  const int64_t d_state = c["state_size"], d_conv = c["conv_kernel"], n_layer = c["num_hidden_layers"];
  const int64_t n_vocab = c["vocab_size"];
  const int64_t d_inner = static_cast<int64_t>(c["expand"].get<double>() * n_embd);
  const int64_t conv_dim = d_inner + 2 * n_group * d_state, d_in_proj = d_inner + conv_dim + n_head;
  std::map<std::string, std::vector<int64_t>> e;
  e["token_embd.weight"] = {n_embd, n_vocab};
  e["output_norm.weight"] = {n_embd};
  if (!c.value("tie_word_embeddings", false)) e["output.weight"] = {n_embd, n_vocab};
  for (int64_t l = 0; l < n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    e[b + "attn_norm.weight"] = {n_embd};
    e[b + "ssm_in.weight"] = {n_embd, d_in_proj};
    e[b + "ssm_conv1d.weight"] = {d_conv, conv_dim};
    e[b + "ssm_conv1d.bias"] = {conv_dim};
    e[b + "ssm_dt.bias"] = {n_head};
    e[b + "ssm_a"] = {1, n_head};
    e[b + "ssm_d"] = {1, n_head};
    e[b + "ssm_norm.weight"] = {d_inner / n_group, n_group};
    e[b + "ssm_out.weight"] = {d_inner, n_embd};
  }
  expect_tensor_set(f, e);
  expect_ggml_layout(f);
  expect_f32_params(f, m, true);
  EXPECT_EQ(u32(f, "mamba2.embedding_length"), n_embd);
  EXPECT_EQ(u32(f, "mamba2.block_count"), n_layer);
  EXPECT_EQ(u32(f, "mamba2.ssm.conv_kernel"), d_conv);
  EXPECT_EQ(u32(f, "mamba2.ssm.inner_size"), d_inner);
  EXPECT_EQ(u32(f, "mamba2.ssm.state_size"), d_state);
  EXPECT_EQ(u32(f, "mamba2.ssm.time_step_rank"), n_head);
  EXPECT_EQ(u32(f, "mamba2.ssm.group_count"), n_group);
  EXPECT_EQ(f.get_as<float>("mamba2.attention.layer_norm_rms_epsilon"),
            static_cast<float>(c["layer_norm_epsilon"].get<double>()));
  EXPECT_EQ(f.tensor("blk.0.ssm_in.weight").type, GgmlType::kQ8_0);
  const Param& in0 = m.weights().get("backbone.layers.0.mixer.in_proj.weight");
  EXPECT_EQ(bytes_of(f.tensor("blk.0.ssm_in.weight")),
            quantize(QuantScheme::parse("q8_0"), in0.data(), in0.rows(), in0.cols()).data);
  // kllens normalizes per group by default, as llama.cpp does: no note about the norm.
  bool group_note = false;
  for (const auto& n : r.notes) group_note = group_note || n.find("per group") != std::string::npos;
  EXPECT_FALSE(group_note);
}

TEST_F(GgufExportTest, OracleMamba2MatchesLlamaCppShapes) {
  check_mamba2("data/fixtures/oracles/mamba2", out("o2.gguf"));
}

TEST_F(GgufExportTest, DemoMamba2MatchesLlamaCppShapes) {
  check_mamba2("data/models/demo-mamba2", out("d2.gguf"));
  gguf::File f(out("d2.gguf"));
  EXPECT_EQ(f.get_as<std::string>("tokenizer.ggml.model"), "gpt2");
}

TEST_F(GgufExportTest, HymbaUsesKllensKeysWithTheHfConfigIntact) {
  const std::string rel = "data/fixtures/oracles/hymba";
  const Model& m = cached_model(rel);
  const GgufExportResult r = export_gguf(m, uniform(m, "int4:g32"), out("h.gguf"));
  EXPECT_FALSE(r.llama_cpp_layout);
  gguf::File f(out("h.gguf"));
  EXPECT_EQ(f.get_as<std::string>("general.architecture"), "kllens.hymba");
  EXPECT_EQ(f.get_as<std::string>("kllens.hf_config"),
            test::read_file(test::repo_path(rel) + "/config.json"));
  ASSERT_EQ(f.tensors().size(), m.weights().all().size());
  for (const auto& p : m.weights().all()) {
    const gguf::TensorInfo& t = f.tensor(p->name);
    EXPECT_EQ(t.ne, std::vector<int64_t>(p->shape.rbegin(), p->shape.rend())) << p->name;
    if (!p->is_component()) {
      EXPECT_EQ(t.type, GgmlType::kF32) << p->name;
      EXPECT_EQ(read_f32(t), p->value) << p->name;
      EXPECT_EQ(f.find("kllens.scheme." + p->name), nullptr);
      continue;
    }
    const std::string scheme = f.get_as<std::string>("kllens.scheme." + p->name);
    if (p->role == Role::kConv1d) {
      EXPECT_EQ(scheme, "f32");
      continue;
    }
    EXPECT_EQ(scheme, "int4:g32:sym:s16") << p->name;
    if (p->shape.back() % 32 == 0) {
      EXPECT_EQ(t.type, GgmlType::kQ4_0) << p->name;
      std::vector<float> fq = p->value;
      fake_quantize(QuantScheme::parse(scheme), fq.data(), p->rows(), p->cols());
      EXPECT_EQ(read_f32(t), fq) << p->name;
    } else {
      EXPECT_EQ(t.type, GgmlType::kF16) << p->name;
    }
  }
  expect_ggml_layout(f);
}

TEST_F(GgufExportTest, MambaWithProjectionBiasFallsBackToKllensLayout) {
  const Model& m = cached_model("data/fixtures/oracles/mamba-tied-bias");
  const GgufExportResult r = export_gguf(m, uniform(m, "q8_0"), out("b.gguf"));
  EXPECT_FALSE(r.llama_cpp_layout);
  EXPECT_EQ(r.architecture, "kllens.mamba");
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("bias"), std::string::npos) << r.notes[0];
  gguf::File f(out("b.gguf"));
  EXPECT_NE(f.find_tensor("backbone.layers.0.mixer.in_proj.bias"), nullptr);
  EXPECT_NE(f.find_tensor("backbone.layers.0.mixer.A_log"), nullptr);  // untransformed
}

TEST_F(GgufExportTest, RejectsAssignmentsForTensorsTheModelLacks) {
  const Model& m = cached_model("data/fixtures/oracles/mamba");
  SchemeAssignment a;
  a["backbone.layers.99.mixer.in_proj.weight"] = QuantScheme::parse("q8_0");
  EXPECT_THROW(export_gguf(m, a, out("x.gguf")), Error);
  a.clear();
  a["backbone.layers.0.mixer.D"] = QuantScheme::parse("q8_0");
  EXPECT_THROW(export_gguf(m, a, out("x.gguf")), Error);
  EXPECT_FALSE(fs::exists(out("x.gguf")));
}

TEST(GgufEncode, SchemesMapToTheNearestGgmlType) {
  std::vector<float> w(4 * 64);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(static_cast<float>(i) * 0.37f) * 0.1f;
  const auto enc = [&](const std::string& s, int64_t ne0 = 64) {
    return encode_for_gguf(QuantScheme::parse(s), w.data(), 4, 64, ne0);
  };
  EXPECT_EQ(enc("q8_0").type, GgmlType::kQ8_0);
  EXPECT_FALSE(enc("q8_0").fallback);
  EXPECT_EQ(enc("q4_0").type, GgmlType::kQ4_0);
  EXPECT_EQ(enc("bf16").type, GgmlType::kBF16);
  EXPECT_EQ(enc("f16").type, GgmlType::kF16);
  EXPECT_EQ(enc("f32").type, GgmlType::kF32);
  for (const char* s : {"int2:g32", "int3:g64", "int4:g0", "int4:g32"}) {
    const GgufEncoded e = enc(s);
    EXPECT_EQ(e.type, GgmlType::kQ4_0) << s;
    EXPECT_TRUE(e.fallback && e.exact) << s;
  }
  for (const char* s : {"int5:g32", "int8:g32", "int8:g0", "int7:g64"}) {
    const GgufEncoded e = enc(s);
    EXPECT_EQ(e.type, GgmlType::kQ8_0) << s;
    EXPECT_TRUE(e.fallback && e.exact) << s;
  }
  EXPECT_EQ(enc("int4:g32:asym").type, GgmlType::kQ4_1);
  EXPECT_EQ(enc("int8:g32:asym").type, GgmlType::kQ8_0);
  EXPECT_FALSE(enc("int4:g16").exact);
  EXPECT_FALSE(enc("int8:g8").exact);
  const GgufEncoded odd = enc("q8_0", 16);  // rows stored as {16, ...}: no whole blocks
  EXPECT_EQ(odd.type, GgmlType::kF16);
  EXPECT_TRUE(odd.fallback);
}


// A `kllens synth` folder carries the byte-level tokenizer: its GGUF file has a gpt2 vocabulary
// of the embedding's rows (the 256 byte tokens, then "[PAD<id>]"), so llama.cpp loads it.
TEST_F(GgufExportTest, SynthFolderCarriesTheByteLevelVocabulary) {
  const fs::path config = dir_ / "tiny.json";
  test::write_file(config, R"({"model_type": "mamba", "hidden_size": 16, "num_hidden_layers": 2,
      "vocab_size": 259, "state_size": 4, "expand": 2, "conv_kernel": 4, "time_step_rank": 2,
      "use_bias": false, "use_conv_bias": true, "layer_norm_epsilon": 1e-5,
      "tie_word_embeddings": true, "eos_token_id": 0})");
  SynthOptions o;
  o.config_path = config.string();
  o.out_dir = (dir_ / "tiny").string();
  o.dtype = DType::kF32;
  ASSERT_EQ(synthesize_checkpoint(o).tokenizer, "byte-level");
  const auto m = load_model(o.out_dir);
  export_gguf(*m, uniform(*m, "f32"), out("tiny.gguf"));
  gguf::File f(out("tiny.gguf"));
  EXPECT_EQ(f.get_as<std::string>("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_as<std::string>("tokenizer.ggml.pre"), "gpt-2");
  const auto& tokens = f.get_as<std::vector<std::string>>("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 259u);
  const Tokenizer tok = Tokenizer::load(o.out_dir + "/tokenizer.json");
  for (int32_t id = 0; id < 256; ++id) EXPECT_EQ(tokens[static_cast<size_t>(id)], *tok.id_to_token(id));
  EXPECT_EQ(tokens[256], "[PAD256]");
  EXPECT_EQ(tokens[258], "[PAD258]");
  EXPECT_TRUE(f.get_as<std::vector<std::string>>("tokenizer.ggml.merges").empty());
  EXPECT_EQ(u32(f, "tokenizer.ggml.eos_token_id"), 0u);
}
}  // namespace
}  // namespace kllens
