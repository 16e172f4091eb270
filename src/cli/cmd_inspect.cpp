// inspect: architecture, layers, every component with shape, parameters and size.
#include <iostream>

#include "cli/common.h"
#include "eval/quantized_eval.h"
#include "io/safetensors.h"
#include "quant/scheme.h"

namespace kllens::cli {

namespace {

std::string human(double bytes) {
  if (bytes >= 1e9) return fmt::format("{:.2f} GB", bytes / 1e9);
  if (bytes >= 1e6) return fmt::format("{:.2f} MB", bytes / 1e6);
  if (bytes >= 1e3) return fmt::format("{:.1f} kB", bytes / 1e3);
  return fmt::format("{:.0f} B", bytes);
}
}  // namespace

void add_inspect(CLI::App& app) {
  struct Opts {
    std::string model;
    bool json = false;
    RunOptions run;
  };
  // How a matrix is held in memory: its packed scheme, float32, or float32 dequantized at load
  // (a block-format tensor in a role read element-wise, such as conv1d).
  const auto held_as = [](const Param& p, const ModelInfo& info) -> std::string {
    if (p.packed) return p.packed->scheme.to_string();
    const auto it = info.dequantized_at_load.find(p.name);
    return it == info.dequantized_at_load.end() ? "f32" : "f32<-" + it->second;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("inspect", "architecture, layers, components, parameter counts and sizes");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder, or a GGUF file from `kllens quantize`")->required();
  cmd->add_flag("--json", o->json, "machine-readable output");
  o->run.add(cmd);
  cmd->callback([o, held_as] {
    o->run.apply();
    auto model = open_model(o->model);
    const auto& info = model->info();
    const auto bf16 = QuantScheme::parse("bf16");
    const auto int8 = QuantScheme::parse("int8:g32");
    const auto int4 = QuantScheme::parse("int4:g32");
    // Sizes are the GGUF tensor data `kllens quantize --uniform` writes (eval/quantized_eval.h);
    // a packed GGUF input is measured as its float model would be.
    const int64_t total_bf16 = uniform_gguf_bytes(*model, bf16);
    const int64_t total_int8 = uniform_gguf_bytes(*model, int8);
    const int64_t total_int4 = uniform_gguf_bytes(*model, int4);
    const auto bytes_as = [&](const Param& p, const QuantScheme& s) {
      return component_file_bytes(*model, p, s);
    };
    int64_t comp_params = 0;
    nlohmann::json comps = nlohmann::json::array();
    for (const auto& p : model->weights().all()) {
      if (!p->is_component()) continue;
      comp_params += p->numel();
      comps.push_back({{"name", p->name}, {"role", role_name(p->role)}, {"layer", p->layer},
                       {"shape", p->shape}, {"params", p->numel()}, {"tied_head", p->tied_head},
                       {"bytes_bf16", bytes_as(*p, bf16)}, {"bytes_int8_g32", bytes_as(*p, int8)},
                       {"bytes_int4_g32", bytes_as(*p, int4)},
                       {"stored", held_as(*p, info)}});
    }
    const int64_t total = model->weights().total_params();
    if (o->json) {
      nlohmann::json details = nlohmann::json::object();
      for (const auto& [k, v] : info.details) details[k] = v;
      print_json({{"model", o->model}, {"arch", info.arch}, {"layers", info.n_layers},
                  {"d_model", info.d_model}, {"vocab", info.vocab},
                  {"prefix_tokens", info.n_prefix_tokens}, {"layer_kinds", info.layer_kinds},
                  {"details", details}, {"params", total}, {"component_params", comp_params},
                  {"components", comps},
                  {"bytes", {{"bf16", total_bf16}, {"int8_g32", total_int8}, {"int4_g32", total_int4}}},
                  {"unused_tensors", model->weights().unused()}});
      return;
    }
    std::cout << fmt::format("model        {}\narchitecture {}\nlayers       {}\nd_model      {}\nvocab        {}\n",
                             o->model, info.arch, info.n_layers, info.d_model, info.vocab);
    if (info.n_prefix_tokens) std::cout << fmt::format("meta tokens  {}\n", info.n_prefix_tokens);
    for (const auto& [k, v] : info.details) std::cout << fmt::format("{:<12} {}\n", k, v);
    std::cout << fmt::format("parameters   {} ({} in {} components)\n\n", total, comp_params, comps.size());
    for (size_t l = 0; l < info.layer_kinds.size(); ++l)
      std::cout << fmt::format("  layer {:>3}  {}\n", l, info.layer_kinds[l]);
    std::cout << fmt::format("\n{:<52} {:<12} {:<18} {:>12} {:>10} {:>10} {:>10} {:>10}\n", "component", "role",
                             "shape", "params", "bf16", "int8:g32", "int4:g32", "in memory");
    for (const auto& c : comps) {
      std::string role = c["role"].get<std::string>();
      if (c["tied_head"].get<bool>()) role += "+head";
      std::cout << fmt::format("{:<52} {:<12} {:<18} {:>12} {:>10} {:>10} {:>10} {:>8}\n",
                               c["name"].get<std::string>(), role,
                               shape_str(c["shape"].get<std::vector<int64_t>>()),
                               c["params"].get<int64_t>(), human(c["bytes_bf16"].get<double>()),
                               human(c["bytes_int8_g32"].get<double>()),
                               human(c["bytes_int4_g32"].get<double>()), c["stored"].get<std::string>());
    }
    std::cout << fmt::format("\nmodel size (GGUF tensor data of `kllens quantize --uniform`: components "
                             "but conv1d at the scheme, conv1d at the checkpoint's type, other tensors "
                             "F32):\n"
                             "  BF16            {:>12}  ({:.2f} bits/param)\n"
                             "  INT8 (int8:g32) {:>12}  ({:.2f} bits/param)\n"
                             "  INT4 (int4:g32) {:>12}  ({:.2f} bits/param)\n",
                             human(total_bf16), 8.0 * total_bf16 / total, human(total_int8),
                             8.0 * total_int8 / total, human(total_int4), 8.0 * total_int4 / total);
    if (!info.dequantized_at_load.empty())
      std::cout << fmt::format("\n{} tensors in ggml block formats are read element by element and "
                               "were dequantized to float32 at load (\"f32<-TYPE\")\n",
                               info.dequantized_at_load.size());
    if (!model->weights().unused().empty())
      std::cout << fmt::format("\n{} tensors in the checkpoint are not used by kllens (e.g. {})\n",
                               model->weights().unused().size(), model->weights().unused().front());
  });
}

}  // namespace kllens::cli
