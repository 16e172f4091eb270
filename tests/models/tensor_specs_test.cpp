// tensor_specs(config) (the registry's table, no weights loaded) against every checkpoint in the
// repository (data/fixtures/oracles/* and data/models/demo-*): it names exactly the checkpoint's
// tensors (a tied model's file may also hold lm_head.weight, a copy of the embedding) with the
// same shapes; every component (a *.weight with 2+ dimensions) has a role other than kOther; and
// roles follow one naming rule across families (q_proj -> kQ, *.bias -> kBias, dt_proj bias ->
// kDtBias, A_log -> kSsmA, ...), since synth and quantization treat tensors by role. Also: the
// table a loaded model reports equals tensor_specs' (the constructor loads that table).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

// Repository-relative folders of every checkpoint fixture, sorted.
std::vector<std::string> fixture_folders() {
  std::vector<std::string> out;
  const fs::path oracles = test::repo_path("data/fixtures/oracles");
  if (fs::is_directory(oracles))
    for (const auto& e : fs::directory_iterator(oracles))
      if (e.is_directory() && fs::exists(e.path() / "config.json"))
        out.push_back("data/fixtures/oracles/" + e.path().filename().string());
  const fs::path models = test::repo_path("data/models");
  if (fs::is_directory(models))
    for (const auto& e : fs::directory_iterator(models))
      if (e.is_directory() && e.path().filename().string().rfind("demo-", 0) == 0 &&
          fs::exists(e.path() / "config.json"))
        out.push_back("data/models/" + e.path().filename().string());
  // Families with no Hugging Face oracle here (llama.cpp is theirs): their random fixtures.
  for (const char* f : {"data/fixtures/nemotron_h-tiny", "data/fixtures/granitehybrid-tiny",
                        "data/fixtures/granitehybrid-moe-tiny"})
    if (fs::exists(test::repo_path(std::string(f) + "/config.json"))) out.push_back(f);
  std::sort(out.begin(), out.end());
  return out;
}

// The role a tensor's name implies, the same for every family (nullopt: no rule for this name;
// such a tensor must still not be an kOther component).
std::optional<Role> role_by_name(const std::string& name) {
  struct Rule {
    std::regex pattern;
    Role role;
  };
  // First match wins.
  static const std::vector<Rule> rules = [] {
    const std::vector<std::pair<const char*, Role>> table = {
        {R"(^lm_head\.weight$)", Role::kHead},
        {R"((^|\.)(embed_tokens|embeddings|embedding)\.weight$)", Role::kEmbed},
        {R"((^|\.)memory_tokens$)", Role::kMetaTokens},
        {R"((^|\.)(dt_bias|dt_proj(\.\d+)?\.bias)$)", Role::kDtBias},
        {R"(\.bias$)", Role::kBias},
        {R"((^|\.)A_log(\.\d+)?$)", Role::kSsmA},
        {R"((^|\.)D(\.\d+)?$)", Role::kSsmD},
        {R"(norm[A-Za-z0-9_]*\.weight$)", Role::kNorm},
        {R"((^|\.)q_proj\.weight$)", Role::kQ},
        {R"((^|\.)k_proj\.weight$)", Role::kK},
        {R"((^|\.)v_proj\.weight$)", Role::kV},
        {R"((^|\.)o_proj\.weight$)", Role::kO},
        {R"((^|\.)gate_proj\.weight$)", Role::kGate},
        {R"((^|\.)up_proj\.weight$)", Role::kUp},
        {R"((^|\.)down_proj\.weight$)", Role::kDown},
        {R"((^|\.)in_proj\.weight$)", Role::kInProj},
        {R"((^|\.)x_proj(\.\d+)?\.weight$)", Role::kXProj},
        {R"((^|\.)dt_proj(\.\d+)?\.weight$)", Role::kDtProj},
        {R"((^|\.)out_proj\.weight$)", Role::kOutProj},
        {R"((^|\.)conv1d\.weight$)", Role::kConv1d},
        {R"((^|\.)router\.weight$)", Role::kRouter},
    };
    std::vector<Rule> r;
    for (const auto& [p, role] : table) r.push_back({std::regex(p), role});
    return r;
  }();
  for (const auto& rule : rules)
    if (std::regex_search(name, rule.pattern)) return rule.role;
  return std::nullopt;
}

bool is_component(const TensorSpec& s) {
  const std::string suffix = ".weight";
  return s.shape.size() >= 2 && s.name.size() > suffix.size() &&
         s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class TensorSpecsTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string folder() const { return test::repo_path(GetParam()); }
  // Skips folders of families the registry does not know yet (their factory is wired in later).
  bool known_family(const HfConfig& config) const {
    const auto types = supported_model_types();
    return std::find(types.begin(), types.end(), config.model_type()) != types.end();
  }
};

TEST_P(TensorSpecsTest, NamesExactlyTheCheckpointsTensorsWithTheirShapes) {
  const HfConfig config = HfConfig::load_folder(folder());
  if (!known_family(config)) GTEST_SKIP() << config.model_type() << " is not in the registry";
  const auto specs = tensor_specs(config);
  const TensorStore store = TensorStore::open_folder(folder());

  std::map<std::string, const TensorSpec*> by_name;
  for (const auto& s : specs) {
    EXPECT_TRUE(by_name.emplace(s.name, &s).second) << "tensor '" << s.name << "' listed twice";
  }
  const bool tied = !by_name.count("lm_head.weight");
  const TensorSpec* embed = nullptr;
  for (const auto& s : specs)
    if (s.role == Role::kEmbed) {
      EXPECT_EQ(embed, nullptr) << "two embeddings";
      embed = &s;
    }
  ASSERT_NE(embed, nullptr) << "no kEmbed tensor";

  std::set<std::string> sources;  // checkpoint tensors the table reads as row ranges
  for (const auto& s : specs) {
    const TensorView* view = store.find(s.name);
    if (!view && !s.source.empty() && store.find(s.source)) {
      EXPECT_EQ(store.get(s.source).shape, s.source_shape) << s.source;
      // rows of the source seen as a matrix of its last dimension
      int64_t source_rows = 1;
      for (size_t d = 0; d + 1 < s.source_shape.size(); ++d) source_rows *= s.source_shape[d];
      EXPECT_LE(s.source_row + s.shape[0], source_rows) << s.name;
      EXPECT_EQ(s.shape.back(), s.source_shape.back()) << s.name;
      sources.insert(s.source);
      continue;
    }
    if (!view) {
      EXPECT_TRUE(s.optional) << "'" << s.name << "' is in the table but not in the checkpoint";
      continue;
    }
    EXPECT_EQ(view->shape, s.shape) << "'" << s.name << "': checkpoint " << shape_str(view->shape)
                                    << ", table " << shape_str(s.shape);
  }
  for (const auto& name : store.names()) {
    if (by_name.count(name) || sources.count(name)) continue;
    if (name == "lm_head.weight" && tied) {
      // A tied checkpoint may store the head anyway; it must be the embedding's shape.
      EXPECT_EQ(store.get(name).shape, embed->shape) << "tied lm_head.weight";
      continue;
    }
    ADD_FAILURE() << "checkpoint tensor '" << name << "' is not in the table";
  }
}

TEST_P(TensorSpecsTest, RolesAreSetAndFollowTheNames) {
  const HfConfig config = HfConfig::load_folder(folder());
  if (!known_family(config)) GTEST_SKIP() << config.model_type() << " is not in the registry";
  int components = 0;
  for (const auto& s : tensor_specs(config)) {
    if (is_component(s)) {
      ++components;
      EXPECT_NE(s.role, Role::kOther) << "component '" << s.name << "' has no role";
    }
    const auto want = role_by_name(s.name);
    if (want) {
      EXPECT_EQ(role_name(s.role), role_name(*want)) << "'" << s.name << "'";
    }
    EXPECT_GE(s.layer, -1) << s.name;
    EXPECT_LT(s.layer, config.get_positive("num_hidden_layers")) << s.name;
  }
  EXPECT_GT(components, 0);
}

TEST_P(TensorSpecsTest, LoadedModelHasTheSameTable) {
  const HfConfig config = HfConfig::load_folder(folder());
  if (!known_family(config)) GTEST_SKIP() << config.model_type() << " is not in the registry";
  const auto specs = tensor_specs(config);
  const auto model = load_model(folder());
  std::vector<std::string> present;
  const TensorStore store = TensorStore::open_folder(folder());
  for (const auto& s : specs) {
    if (!store.find(s.name) && (s.source.empty() || !store.find(s.source))) continue;
    present.push_back(s.name);
    const Param* p = model->weights().find(s.name);
    ASSERT_NE(p, nullptr) << s.name;
    EXPECT_EQ(p->shape, s.shape) << s.name;
    EXPECT_EQ(role_name(p->role), role_name(s.role)) << s.name;
    EXPECT_EQ(p->layer, s.layer) << s.name;
  }
  EXPECT_EQ(model->weights().all().size(), present.size());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TensorSpecsTest, ::testing::ValuesIn(fixture_folders()),
                         [](const auto& info) {
                           std::string n = info.param.substr(info.param.rfind('/') + 1);
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(TensorSpecs, FindsTheFixtures) {
  // Guards against an empty parameter list silently testing nothing.
  EXPECT_GE(fixture_folders().size(), 12u);
}

TEST(TensorSpecs, EveryRegisteredFamilyHasAFixture) {
  std::set<std::string> covered;
  for (const auto& f : fixture_folders())
    covered.insert(HfConfig::load_folder(test::repo_path(f)).model_type());
  for (const auto& type : supported_model_types()) EXPECT_TRUE(covered.count(type)) << type;
}

// Configs whose numbers are out of any model's range: each is one Error naming the key, found
// before any shape arithmetic overflows (UBSan: signed overflow, double -> int64 out of range) or
// a table of 10^8 layers is built (it ran out of time / memory).
TEST(TensorSpecs, OutOfRangeConfigNumbersAreOneError) {
  using json = nlohmann::json;
  const auto expect_error = [](const json& j, const std::string& key) {
    try {
      tensor_specs(HfConfig::from_json(j, "cfg.json"));
      ADD_FAILURE() << "accepted: " << j.dump();
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << key << " not in: " << msg;
    }
  };
  const auto fixture = [](const std::string& family) {
    return json::parse(test::read_file(test::repo_path("data/fixtures/oracles/" + family + "/config.json")));
  };
  for (const char* family : {"mamba", "mamba2", "falcon_h1", "llama", "hymba", "jamba"}) {
    json j = fixture(family);
    EXPECT_NO_THROW(tensor_specs(HfConfig::from_json(j, "cfg.json"))) << family;
    j["num_hidden_layers"] = 100000000;
    expect_error(j, "num_hidden_layers");
    j = fixture(family);
    j["vocab_size"] = int64_t{1} << 62;
    expect_error(j, "vocab_size");
  }
  json j = fixture("mamba");
  j.erase("intermediate_size");
  j["expand"] = 1e300;  // was int64_t(expand * hidden): undefined behaviour
  expect_error(j, "expand");
  j = fixture("mamba");
  j["intermediate_size"] = int64_t{1} << 62;  // was 2 * I: signed overflow
  expect_error(j, "intermediate_size");
  j = fixture("mamba2");
  j["expand"] = 1e300;
  expect_error(j, "expand");
  j = fixture("hymba");
  j["mamba_expand"] = 1e300;
  expect_error(j, "mamba_expand");
  j = fixture("jamba");
  j["num_experts"] = 1000000;
  expect_error(j, "num_experts");
}

}  // namespace
}  // namespace kllens
