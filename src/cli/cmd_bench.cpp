// synth: random-weight checkpoints of real configurations. bench: speed and memory.
#include <chrono>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "eval/bench.h"
#include "kernels/ops.h"
#include "models/synth.h"

namespace kllens::cli {

void add_synth(CLI::App& app) {
  struct Opts {
    std::string preset, out, dtype = "bf16";
    uint64_t seed = 1;
  };
  auto o = std::make_shared<Opts>();
  std::string presets;
  for (const auto& p : synth_presets()) presets += (presets.empty() ? "" : "|") + p;
  auto* cmd = app.add_subcommand("synth", "write a random-weight HF model folder of a real configuration");
  cmd->add_option("--preset", o->preset, presets)->required();
  cmd->add_option("--out", o->out, "output folder")->required();
  cmd->add_option("--dtype", o->dtype, "bf16|f16|f32")->capture_default_str()->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->callback([o] {
    SynthOptions s;
    s.preset = o->preset;
    s.out_dir = o->out;
    s.seed = o->seed;
    s.dtype = o->dtype == "f32" ? DType::kF32 : o->dtype == "f16" ? DType::kF16 : DType::kBF16;
    const int64_t params = synthesize_checkpoint(s);
    std::cerr << fmt::format("wrote {} ({} parameters, {}) to {}\n", o->preset, params, o->dtype, o->out);
  });
}

void add_bench(CLI::App& app) {
  struct Opts {
    std::string model;
    BenchOptions bench;
    bool json = false;
    ThreadsOption threads;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "prefill/decode tokens per second, decode latency, peak memory");
  cmd->add_option("MODEL", o->model, "model folder")->required();
  cmd->add_option("--prompt", o->bench.prompt, "prefill tokens")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--gen", o->bench.gen, "decode steps")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--runs", o->bench.runs, "repetitions (median and spread reported)")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", o->json, "machine-readable output");
  o->threads.add(cmd);
  cmd->callback([o] {
    o->threads.apply();
    const auto t0 = std::chrono::steady_clock::now();
    auto model = open_model(o->model);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const size_t rss_loaded = current_rss_bytes();
    const auto r = run_bench(*model, o->bench);
    const size_t peak = peak_rss_bytes();
    const size_t disk = path_bytes(o->model);
    if (o->json) {
      print_json({{"model", o->model}, {"arch", model->info().arch}, {"threads", num_threads()},
                  {"bytes_on_disk", disk}, {"load_seconds", load_s}, {"rss_after_load", rss_loaded},
                  {"peak_rss", peak}, {"prompt", o->bench.prompt}, {"gen", o->bench.gen},
                  {"runs", o->bench.runs},
                  {"prefill_tps", {{"median", r.prefill.median}, {"min", r.prefill.min}, {"max", r.prefill.max}, {"runs", r.prefill_tps}}},
                  {"decode_tps", {{"median", r.decode.median}, {"min", r.decode.min}, {"max", r.decode.max}, {"runs", r.decode_tps}}},
                  {"decode_latency_ms", {{"median", r.latency.median}, {"p90", r.latency_p90_ms}, {"min", r.latency.min}, {"max", r.latency.max}}},
                  {"decode_state_bytes", {{"after_first", r.decode_state_bytes_start}, {"after_last", r.decode_state_bytes_end}}}});
      return;
    }
    std::cout << fmt::format("model          {} ({}), {} threads\n", o->model, model->info().arch, num_threads());
    std::cout << fmt::format("on disk        {:.1f} MB; load {:.2f} s; RSS after load {:.1f} MB; peak RSS {:.1f} MB\n",
                             disk / 1e6, load_s, rss_loaded / 1e6, peak / 1e6);
    if (o->bench.prompt > 0)
      std::cout << fmt::format("prefill        {:.1f} tok/s median ({:.1f}..{:.1f}) over {} runs of {} tokens\n",
                               r.prefill.median, r.prefill.min, r.prefill.max, o->bench.runs, o->bench.prompt);
    if (o->bench.gen > 0) {
      std::cout << fmt::format("decode         {:.1f} tok/s median ({:.1f}..{:.1f}) over {} runs of {} tokens\n",
                               r.decode.median, r.decode.min, r.decode.max, o->bench.runs, o->bench.gen);
      std::cout << fmt::format("token latency  median {:.2f} ms, p90 {:.2f} ms\n", r.latency.median, r.latency_p90_ms);
      std::cout << fmt::format("decode state   {:.2f} MB after 1 token, {:.2f} MB after {}\n",
                               r.decode_state_bytes_start / 1e6, r.decode_state_bytes_end / 1e6, o->bench.gen);
    }
  });
}

}  // namespace kllens::cli
