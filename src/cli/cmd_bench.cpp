// synth: random-weight checkpoints of real configurations. bench: speed and memory.
#include <chrono>
#include <optional>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "eval/bench.h"
#include "eval/packed_model.h"
#include "plan/plan_io.h"
#include "kernels/ops.h"
#include "models/synth.h"
#include "quant/qmatmul.h"

namespace kllens::cli {

void add_synth(CLI::App& app) {
  struct Opts {
    std::string preset, config, out, dtype = "bf16", tokenizer;
    uint64_t seed = 1;
    bool no_tokenizer = false;
  };
  auto o = std::make_shared<Opts>();
  std::string presets;
  for (const auto& p : synth_presets()) presets += (presets.empty() ? "" : "|") + p;
  auto* cmd = app.add_subcommand("synth", "write a random-weight HF model folder of a real configuration");
  auto* preset = cmd->add_option("--preset", o->preset, presets);
  auto* config = cmd->add_option("--config", o->config,
                                 "a config.json (e.g. one published on the Hub) to fill with random "
                                 "weights of its exact shapes, copied into the folder as it is");
  preset->excludes(config);
  cmd->add_option("--out", o->out, "output folder")->required();
  cmd->add_option("--dtype", o->dtype, "bf16|f16|f32")->capture_default_str()->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  auto* tok = cmd->add_option("--tokenizer", o->tokenizer,
                              "a tokenizer.json, or a model folder holding one, to copy into the "
                              "folder (its ids must fit the config's vocab_size); default: a "
                              "byte-level tokenizer, one token per byte, ids 0..255");
  cmd->add_flag("--no-tokenizer", o->no_tokenizer, "write no tokenizer.json")->excludes(tok);
  cmd->footer(R"(
The folder is a normal Hugging Face checkpoint: config.json, model.safetensors (weights drawn
per role with --seed: small normal matrices, unit norms, the SSM parameters as their reference
initializers make them) and tokenizer.json, so that text commands run on it and its GGUF files
(kllens quantize) carry a vocabulary that llama.cpp loads.)");
  cmd->callback([o] {
    if (o->preset.empty() == o->config.empty())
      throw UsageError("synth needs --preset NAME or --config FILE");
    SynthOptions s;
    s.preset = o->preset;
    s.config_path = o->config;
    s.out_dir = o->out;
    s.seed = o->seed;
    s.dtype = o->dtype == "f32" ? DType::kF32 : o->dtype == "f16" ? DType::kF16 : DType::kBF16;
    s.tokenizer_path = o->tokenizer;
    s.write_tokenizer = !o->no_tokenizer;
    const SynthResult r = synthesize_checkpoint(s);
    std::cerr << fmt::format("wrote {} ({} parameters, {}; tokenizer: {}) to {}\n",
                             o->preset.empty() ? o->config : o->preset, r.params, o->dtype,
                             r.tokenizer, o->out);
  });
}

void add_bench(CLI::App& app) {
  struct Opts {
    std::string model, plan, uniform;
    BenchOptions bench;
    bool json = false, no_bandwidth = false;
    RunOptions run;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "bench",
      "prefill/decode tokens per second, decode latency, memory, and the bandwidth arithmetic "
      "(weight bytes per decoded token / measured read bandwidth)");
  cmd->add_option("MODEL", o->model,
                  "Hugging Face model folder, or a GGUF file from `kllens quantize` (runs on its "
                  "packed weights)")
      ->required();
  auto* plan_opt = cmd->add_option("--plan", o->plan,
                                   "pack a folder's model with this plan in memory first (no file)");
  auto* uni_opt = cmd->add_option("--uniform", o->uniform,
                                  "pack every component except conv1d with one scheme in memory first");
  plan_opt->excludes(uni_opt);
  cmd->add_flag("--no-bandwidth", o->no_bandwidth,
                "skip the read-bandwidth measurement (512 MiB, about a second)");
  cmd->add_option("--prompt", o->bench.prompt, "prefill tokens")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--gen", o->bench.gen, "decode steps")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--runs", o->bench.runs, "repetitions (median and spread reported)")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", o->json, "machine-readable output");
  o->run.add(cmd);
  cmd->callback([o, plan_opt, uni_opt] {
    o->run.apply();
    if ((plan_opt->count() || uni_opt->count()) && is_gguf_path(o->model))
      throw UsageError("--plan/--uniform pack a float model; a GGUF file is already packed");
    std::optional<Plan> plan;
    std::optional<QuantScheme> uniform;
    if (plan_opt->count()) plan = read_plan_json(o->plan);
    if (uni_opt->count()) uniform = QuantScheme::parse(o->uniform);
    const auto t0 = std::chrono::steady_clock::now();
    auto model = open_model(o->model);
    std::string packing = is_gguf_path(o->model) ? "GGUF file" : "float32 (as loaded)";
    if (plan || uniform) {
      SchemeAssignment assignment;
      if (plan) {
        for (const auto& [name, sch] : plan->components) assignment[name] = QuantScheme::parse(sch);
        packing = "plan " + o->plan;
      } else {
        assignment = uniform_assignment(*model, *uniform, false);
        packing = "uniform " + uniform->to_string();
      }
      const PackResult pr = pack_model(*model, assignment);
      packing += fmt::format(" ({} matrices packed, {} fake-quantized)", pr.packed, pr.fake_quantized);
    }
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const size_t rss_loaded = current_rss_bytes();
    const int64_t weight_bytes = resident_weight_bytes(model->weights());
    const int64_t token_bytes = decode_bytes_per_token(*model);
    const auto r = run_bench(*model, o->bench);
    const size_t peak = peak_rss_bytes();
    const size_t disk = path_bytes(o->model);
    // After the peak RSS is read: the measurement's buffer is not the model's memory.
    const double bandwidth = o->no_bandwidth ? 0.0 : measure_read_bandwidth(num_threads());
    const double ceiling = bandwidth > 0 ? bandwidth * 1e9 / static_cast<double>(token_bytes) : 0.0;
    const double achieved_gbs = r.decode.median * static_cast<double>(token_bytes) / 1e9;
    if (o->json) {
      print_json({{"model", o->model}, {"arch", model->info().arch}, {"threads", num_threads()},
                  {"weights", packing}, {"isa", std::string(isa_name(qmatmul_isa()))},
                  {"bytes_on_disk", disk}, {"weight_bytes_in_memory", weight_bytes},
                  {"decode_bytes_per_token", token_bytes},
                  {"read_bandwidth_gbs", bandwidth > 0 ? nlohmann::json(bandwidth) : nlohmann::json()},
                  {"decode_ceiling_tps", ceiling > 0 ? nlohmann::json(ceiling) : nlohmann::json()},
                  {"decode_gbs", achieved_gbs},
                  {"load_seconds", load_s}, {"rss_after_load", rss_loaded},
                  {"peak_rss", peak}, {"prompt", o->bench.prompt}, {"gen", o->bench.gen},
                  {"runs", o->bench.runs},
                  {"prefill_tps", {{"median", r.prefill.median}, {"min", r.prefill.min}, {"max", r.prefill.max}, {"runs", r.prefill_tps}}},
                  {"decode_tps", {{"median", r.decode.median}, {"min", r.decode.min}, {"max", r.decode.max}, {"runs", r.decode_tps}}},
                  {"decode_latency_ms", {{"median", r.latency.median}, {"p90", r.latency_p90_ms}, {"min", r.latency.min}, {"max", r.latency.max}}},
                  {"decode_state_bytes", {{"after_first", r.decode_state_bytes_start}, {"after_last", r.decode_state_bytes_end}}}});
      return;
    }
    std::cout << fmt::format("model          {} ({}), {} threads, {} kernels\n", o->model,
                             model->info().arch, num_threads(), isa_name(qmatmul_isa()));
    std::cout << fmt::format("weights        {}: {:.1f} MB in memory\n", packing, weight_bytes / 1e6);
    std::cout << fmt::format("on disk        {:.1f} MB; load {:.2f} s; RSS after load {:.1f} MB; peak RSS {:.1f} MB\n",
                             disk / 1e6, load_s, rss_loaded / 1e6, peak / 1e6);
    if (o->bench.prompt > 0)
      std::cout << fmt::format("prefill        {:.1f} tok/s median ({:.1f}..{:.1f}) over {} runs of {} tokens\n",
                               r.prefill.median, r.prefill.min, r.prefill.max, o->bench.runs, o->bench.prompt);
    if (o->bench.gen > 0) {
      std::cout << fmt::format("decode         {:.1f} tok/s median ({:.1f}..{:.1f}) over {} runs of {} tokens\n",
                               r.decode.median, r.decode.min, r.decode.max, o->bench.runs, o->bench.gen);
      std::cout << fmt::format("token latency  median {:.2f} ms, p90 {:.2f} ms\n", r.latency.median, r.latency_p90_ms);
      if (bandwidth > 0)
        std::cout << fmt::format(
            "bandwidth      {:.1f} MB of weights per token x {:.1f} tok/s = {:.1f} GB/s, {:.0f}% of "
            "the {:.1f} GB/s measured read bandwidth (ceiling {:.1f} tok/s)\n",
            token_bytes / 1e6, r.decode.median, achieved_gbs, 100.0 * achieved_gbs / bandwidth,
            bandwidth, ceiling);
      std::cout << fmt::format("decode state   {:.2f} MB after 1 token, {:.2f} MB after {}\n",
                               r.decode_state_bytes_start / 1e6, r.decode_state_bytes_end / 1e6, o->bench.gen);
    }
  });
}

}  // namespace kllens::cli
