// quantize: write a model with a plan (or one scheme everywhere) as one GGUF file.
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "cli/common.h"
#include "core/error.h"
#include "export/gguf_export.h"
#include "io/durable_file.h"
#include "io/json_file.h"
#include "io/read_file.h"
#include "plan/llama_mix_model.h"
#include "plan/plan_io.h"

namespace kllens::cli {

namespace {

std::string ne_str(const std::vector<int64_t>& ne) {
  std::string s;
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? " x " : "") + std::to_string(ne[i]);
  return s;
}

// The components of a plan written by `kllens plan` (fully validated by read_plan_json), or of a
// hand-written file holding only {"components": {name: scheme}}; *imatrix: the importance matrix
// the plan records (null when none).
std::map<std::string, std::string> read_components(const std::string& path,
                                                   nlohmann::json* imatrix) {
  nlohmann::json j;
  const std::string text = read_file(path);
  check_json_depth(text, path);
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  *imatrix = j.is_object() ? j.value("imatrix", nlohmann::json()) : nlohmann::json();
  if (j.is_object() && j.contains("format")) return plan_from_json(j, path).components;
  if (!j.is_object() || !j.contains("components") || !j["components"].is_object())
    fail("{}: neither a kllens plan nor an object with \"components\": {{name: scheme}}", path);
  std::map<std::string, std::string> out;
  for (const auto& [name, scheme] : j["components"].items()) {
    if (!scheme.is_string()) fail("{}: the scheme of {} is not a string", path, name);
    try {
      QuantScheme::parse(scheme.get<std::string>());
    } catch (const Error& e) {
      fail("{}: component {}: {}", path, name, e.what());
    }
    out[name] = scheme.get<std::string>();
  }
  return out;
}

}  // namespace

void add_quantize(CLI::App& app) {
  struct Opts {
    std::string model, plan, uniform, out, tokenizer, recipe;
    bool json = false;
    RunOptions run;
    ImatrixOption imatrix;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "quantize",
      "write the model with a plan's schemes (or one scheme for every component) as one GGUF "
      "file: llama.cpp's layout for mamba / mamba2, kllens' own keys for other families");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  auto* plan_opt = cmd->add_option("--plan", o->plan, "PLAN.json from `kllens plan`, or a file holding only {\"components\": {name: scheme}}");
  auto* uni_opt = cmd->add_option(
      "--uniform", o->uniform,
      "one scheme for every component except conv1d (which keeps the checkpoint's dtype)");
  plan_opt->excludes(uni_opt);
  cmd->add_option("--out", o->out, "the GGUF file to write")->required();
  cmd->add_option("--recipe", o->recipe,
                  "also write the same types as a llama-quantize --tensor-type-file (anchored "
                  "lower-case tensor names; the base type and llama.cpp commit are printed), to "
                  "apply to your own F32/BF16 GGUF with llama.cpp's quantizer");
  cmd->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json for the vocabulary keys (default: MODEL/tokenizer.json)");
  cmd->add_flag("--json", o->json,
                "print {\"out\", \"architecture\", \"layout\", \"file_bytes\", \"tensors\", "
                "\"fallbacks\", \"notes\", ...}");
  o->run.add(cmd);
  o->imatrix.add(cmd);
  cmd->callback([o, plan_opt, uni_opt] {
    o->run.apply();
    if (!plan_opt->count() && !uni_opt->count())
      throw UsageError("quantize needs --plan PLAN.json or --uniform SCHEME");
    std::optional<std::map<std::string, std::string>> plan;
    std::optional<QuantScheme> uniform;
    nlohmann::json plan_imatrix;
    if (plan_opt->count()) plan = read_components(o->plan, &plan_imatrix);
    if (uni_opt->count()) uniform = QuantScheme::parse(o->uniform);
    if (is_gguf_path(o->model))
      fail("{}: quantize reads a Hugging Face model folder; this is already a GGUF file", o->model);
    auto model = open_model(o->model);
    o->imatrix.load(*model);
    // A plan's choices were measured with its importance matrix (or none): another one would
    // write other bytes than those measured.
    if (plan) check_same_imatrix(plan_imatrix, o->imatrix, o->plan, &*plan);

    SchemeAssignment assignment;
    if (plan) {
      for (const auto& [name, s] : *plan) assignment[name] = QuantScheme::parse(s);
    } else {
      // Rows the scheme cannot hold are kept in the assignment on purpose: the exporter stores
      // them F16 and reports it, as llama-quantize does for unusual shapes.
      for (const Param* p : model->weights().components())
        if (p->role != Role::kConv1d) assignment[p->name] = *uniform;
    }
    std::optional<LlamaRecipe> recipe;
    if (!o->recipe.empty()) {
      // Before any work: a type a row cannot hold is one clear error, since llama-quantize would
      // silently store something else.
      std::map<std::string, std::string> types;
      int refined = 0;
      for (const auto& [name, scheme] : assignment) {
        if (!scheme.is_block() && !scheme.is_keep())
          fail("--recipe: {} is {}, which has no ggml type; llama-quantize cannot write it "
               "(plan with the ggml formats: q4_K, q6_K, q8_0, ...)",
               name, scheme.to_string());
        QuantScheme ggml_scheme = scheme;
        ggml_scheme.refined = false;
        if (scheme.refined) ++refined;
        types[name] = ggml_scheme.to_string();
      }
      recipe = llama_recipe(types, llama_mix_input(*model).tensors);
      if (refined > 0)
        recipe->notes.push_back(fmt::format(
            "{} tensor(s) use kllens' refined quantizer (':refined'): the recipe gives their ggml "
            "type, and llama-quantize fills it with ggml's own quantizer, so those tensors get the "
            "same types and sizes as this file but not the same bytes",
            refined));
    }
    GgufExportOptions options;
    options.tokenizer_json = o->tokenizer;
    if (o->imatrix.matrix) {
      const ImportanceMatrix* m = &*o->imatrix.matrix;
      options.importance = [m](const std::string& name, int64_t cols) {
        return m->importance(name, cols);
      };
    }
    const GgufExportResult r = export_gguf(*model, assignment, o->out, options);
    if (recipe) {
      write_file_durably(o->recipe, recipe->text);
    }
    int64_t tensor_bytes = 0;
    for (const auto& t : r.tensors) tensor_bytes += static_cast<int64_t>(t.bytes);
    // Every size kllens plans with is this number (eval/quantized_eval.h assignment_bytes), intB
    // aside (sized as kllens packs it; the file holds a ggml stand-in).
    bool any_int = false;
    for (const auto& [name, sc] : assignment) any_int |= sc.is_int();
    KLLENS_CHECK(any_int || tensor_bytes == assignment_bytes(*model, assignment),
                 "tensor data {} bytes but the size model says {}", tensor_bytes,
                 assignment_bytes(*model, assignment));

    if (o->json) {
      nlohmann::json tensors = nlohmann::json::array(), fallbacks = nlohmann::json::array();
      for (const auto& t : r.tensors)
        tensors.push_back({{"name", t.name},
                           {"hf_name", t.hf_name},
                           {"ne", t.ne},
                           {"type", gguf::type_name(t.type)},
                           {"scheme", t.scheme.empty() ? nlohmann::json() : nlohmann::json(t.scheme)},
                           {"bytes", t.bytes}});
      for (const auto& f : r.fallbacks)
        fallbacks.push_back({{"tensor", f.tensor},
                             {"requested", f.requested},
                             {"stored", f.stored},
                             {"exact", f.exact},
                             {"reason", f.reason}});
      print_json({{"out", r.path},
                  {"architecture", r.architecture},
                  {"layout", r.llama_cpp_layout ? "llama.cpp" : "kllens"},
                  {"file_type", r.file_type},
                  {"file_bytes", r.file_bytes},
                  {"tensor_bytes", tensor_bytes},
                  {"imatrix", o->imatrix.identity()},
                  {"recipe", recipe ? nlohmann::json{{"file", o->recipe},
                                                     {"base_type", recipe->base_type},
                                                     {"llama_cpp_commit", recipe->commit},
                                                     {"notes", recipe->notes}}
                                    : nlohmann::json()},
                  {"vocab_tokens", r.vocab_tokens},
                  {"source", plan ? nlohmann::json{{"plan", o->plan}}
                                  : nlohmann::json{{"uniform", uniform->to_string()}}},
                  {"tensors", tensors},
                  {"fallbacks", fallbacks},
                  {"notes", r.notes}});
      return;
    }

    size_t width = 6;
    for (const auto& t : r.tensors) width = std::max(width, t.name.size());
    std::cout << fmt::format("{:<{}}  {:<16}  {:<6}  {:<18}  {:>12}\n", "tensor", width, "ne",
                             "type", "scheme", "bytes");
    for (const auto& t : r.tensors)
      std::cout << fmt::format("{:<{}}  {:<16}  {:<6}  {:<18}  {:>12}\n", t.name, width,
                               ne_str(t.ne), gguf::type_name(t.type),
                               t.scheme.empty() ? "-" : t.scheme, t.bytes);
    if (!r.fallbacks.empty()) {
      std::cout << fmt::format("\n{} fallback(s):\n", r.fallbacks.size());
      for (const auto& f : r.fallbacks)
        std::cout << fmt::format("  {}: {} -> {} ({}): {}\n", f.tensor, f.requested, f.stored,
                                 f.exact ? "same values" : "different values", f.reason);
    }
    for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
    if (recipe) {
      for (const auto& n : recipe->notes) std::cout << "recipe note: " << n << "\n";
      std::cout << fmt::format(
          "wrote {}: {} tensor types for llama.cpp {}; apply with\n  llama-quantize{} "
          "--tensor-type-file {} MODEL-F32.gguf OUT.gguf {}\n",
          o->recipe, recipe->entries.size(), recipe->commit,
          o->imatrix.matrix ? " --imatrix " + o->imatrix.path : std::string(), o->recipe,
          recipe->base_type);
    }
    std::cout << fmt::format("\nwrote {}: {:.2f} MB ({} bytes of tensor data), {} tensors, "
                             "architecture {} ({} layout), file type {}\n",
                             r.path, static_cast<double>(r.file_bytes) / 1e6, tensor_bytes,
                             r.tensors.size(),
                             r.architecture, r.llama_cpp_layout ? "llama.cpp" : "kllens",
                             r.file_type);
  });
}

}  // namespace kllens::cli
