// deploy-table: the paper's deployment table for one model, measured here in one command. Every
// row is the model packed in memory exactly as a GGUF file of that configuration would load
// (eval/packed_model.h), evaluated against the float model on the same windows and timed with
// `bench`'s loop.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "cli/common.h"
#include "plan/llama_mix_model.h"
#include "core/error.h"
#include "io/durable_file.h"
#include "eval/bench.h"
#include "eval/packed_model.h"
#include "eval/quantized_eval.h"
#include "kernels/ops.h"
#include "plan/planner.h"
#include "plan/plan_io.h"
#include "quant/qmatmul.h"
#include "report/frontier.h"
#include "sensitivity/sweep.h"

namespace kllens::cli {

namespace {

struct Row {
  std::string label;
  SchemeAssignment assignment;
};

}  // namespace

void add_deploy_table(CLI::App& app) {
  struct Opts {
    std::string model, sens, text, budgets = "4.5,5,6", out, mixes;
    int64_t ctx = 512, windows = 4;
    BenchOptions bench;
    bool json = false;
    RunOptions run;
    ImatrixOption imatrix;
  };
  auto o = std::make_shared<Opts>();
  o->bench.runs = 3;
  auto* cmd = app.add_subcommand(
      "deploy-table",
      "the deployment table for a model: BF16, uniform INT8, uniform INT4 (per-row and g32) and "
      "KL-optimal plans at a few budgets, each packed and measured: size, bits/weight, "
      "perplexity, KL, prefill and decode speed");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  cmd->add_option("--sens", o->sens, "SENS.json from `kllens sensitivity` for this model")->required();
  cmd->add_option("--text", o->text, "evaluation text (held out from the calibration)")->required();
  cmd->add_option("--budgets", o->budgets, "average bits per weight of the KL plans, comma-separated")
      ->capture_default_str();
  cmd->add_option("--mixes", o->mixes,
                  "also llama-quantize's mixes (e.g. Q4_K_M,Q5_K_M), each followed by the KL-optimal "
                  "plan at exactly its bytes");
  cmd->add_option("--ctx", o->ctx, "evaluation window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--windows", o->windows, "evaluation windows (0 = all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--prompt", o->bench.prompt, "prefill tokens timed")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gen", o->bench.gen, "decode steps timed")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--runs", o->bench.runs, "timing repetitions (median reported)")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_option("--out", o->out, "also write the table as Markdown to this file");
  cmd->add_flag("--json", o->json, "print {\"rows\": [{label, bytes, bits_per_weight, ppl, kl, ...}], ...}");
  o->run.add(cmd);
  o->imatrix.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    if (is_gguf_path(o->model)) throw UsageError("deploy-table quantizes the model itself: give the Hugging Face folder");
    std::vector<double> budgets;
    for (const auto& b : split_list(o->budgets)) {
      try {
        size_t used = 0;
        const double v = std::stod(b, &used);
        if (used != b.size() || !(v > 0 && v <= 32)) throw std::invalid_argument(b);
        budgets.push_back(v);
      } catch (const std::exception&) {
        throw UsageError(fmt::format("--budgets: '{}' is not a number of bits per weight in (0, 32]", b));
      }
    }
    const SensitivityReport sens = read_sensitivity_json(o->sens);
    auto reference = open_model(o->model);
    o->imatrix.load(*reference);
    check_same_imatrix(sensitivity_imatrix(sens), o->imatrix, o->sens);
    const auto evalset = load_calibration(o->model, o->text, o->ctx, o->windows);
    if (evalset.windows.empty()) fail("{}: too short for one window of {} tokens", o->text, o->ctx);

    std::vector<Row> rows;
    std::vector<std::string> notes;
    auto uniform_row = [&](const std::string& label, const std::string& scheme) {
      std::vector<std::string> unsupported;
      rows.push_back({label, uniform_assignment(*reference, QuantScheme::parse(scheme), false, &unsupported)});
      if (!unsupported.empty())
        notes.push_back(fmt::format("{}: {} component(s) cannot hold it and are stored as the "
                                    "GGUF file holds them (f16 or llama-quantize's fallback)",
                                    label, unsupported.size()));
    };
    uniform_row("bf16", "bf16");
    uniform_row("uniform int8 (per-row, int8:g0)", "int8:g0");
    uniform_row("uniform int4 (per-row, int4:g0)", "int4:g0");
    uniform_row("uniform int4 (g32, int4:g32)", "int4:g32");
    ProblemOptions po;
    po.metric = "kl";
    PlanProblem problem = build_problem(sens, po);
    use_gguf_sizes(problem, *reference);
    for (double b : budgets) {
      const int64_t budget_bytes = budget_bytes_for(b, problem.total_params);
      try {
        check_budget_feasible(problem, budget_bytes);
      } catch (const Error& e) {
        notes.push_back(fmt::format("KL plan at {} bits: {}", b, e.what()));
        continue;
      }
      const Plan plan = make_plan(problem, solve_optimal(problem, budget_bytes));
      Row row{fmt::format("KL-optimal plan, budget {} bits", b), {}};
      for (const auto& [name, sch] : plan.components) row.assignment[name] = QuantScheme::parse(sch);
      rows.push_back(std::move(row));
    }
    if (!o->mixes.empty()) {
      const LlamaMixInput in = llama_mix_input(*reference);
      for (const auto& name : split_list(o->mixes)) {
        const LlamaMixResult mix =
            llama_mix(in.tensors, in.facts, {llama_mix_canonical(name), o->imatrix.matrix.has_value()});
        Row mix_row{fmt::format("llama.cpp {}", mix.mix), llama_mix_assignment(*reference, mix)};
        const int64_t mix_bytes = assignment_bytes(*reference, mix_row.assignment);
        rows.push_back(std::move(mix_row));
        try {
          check_budget_feasible(problem, mix_bytes);
        } catch (const Error& e) {
          notes.push_back(fmt::format("KL plan at the bytes of {}: {}", mix.mix, e.what()));
          continue;
        }
        const Plan plan = make_plan(problem, solve_optimal(problem, mix_bytes));
        Row row{fmt::format("KL-optimal plan at the {} bytes", mix.mix), {}};
        for (const auto& [n, sch] : plan.components) row.assignment[n] = QuantScheme::parse(sch);
        rows.push_back(std::move(row));
      }
    }

    const double bandwidth = measure_read_bandwidth(num_threads());
    nlohmann::json out_rows = nlohmann::json::array();
    for (const Row& row : rows) {
      std::cerr << "deploy-table: " << row.label << "\n";
      auto model = open_model(o->model);
      const int64_t bytes = assignment_bytes(*model, row.assignment);
      pack_model(*model, row.assignment, o->imatrix.fn());
      const QuantEvalResult ev = evaluate_models(*reference, *model, evalset.windows, false);
      const BenchResult br = run_bench(*model, o->bench);
      const int64_t token_bytes = decode_bytes_per_token(*model);
      out_rows.push_back({{"label", row.label},
                          {"bytes", bytes},
                          {"bits_per_weight", 8.0 * static_cast<double>(bytes) / static_cast<double>(ev.params)},
                          {"ppl", ev.ppl},
                          {"ppl_fp", ev.ppl_fp},
                          {"kl", {{"mean", ev.logits.kl_forward.mean}, {"stderr", ev.logits.kl_forward.stderr_}}},
                          {"top1", ev.logits.top1.mean},
                          {"prefill_tps", br.prefill.median},
                          {"decode_tps", br.decode.median},
                          {"decode_tps_min", br.decode.min},
                          {"decode_tps_max", br.decode.max},
                          {"latency_p90_ms", br.latency_p90_ms},
                          {"decode_bytes_per_token", token_bytes},
                          {"decode_ceiling_tps", bandwidth * 1e9 / static_cast<double>(token_bytes)}});
    }

    std::string md = fmt::format(
        "| configuration | size (MB) | bits/weight | perplexity | KL(P_fp‖P_q) | prefill tok/s | "
        "decode tok/s | decode ceiling tok/s |\n|---|---|---|---|---|---|---|---|\n");
    for (const auto& r : out_rows)
      md += fmt::format("| {} | {:.2f} | {:.3f} | {:.3f} | {:.3e} ± {:.1e} | {:.1f} | {:.1f} | {:.1f} |\n",
                        r["label"].get<std::string>(), r["bytes"].get<double>() / 1e6,
                        r["bits_per_weight"].get<double>(), r["ppl"].get<double>(),
                        r["kl"]["mean"].get<double>(), r["kl"]["stderr"].get<double>(),
                        r["prefill_tps"].get<double>(), r["decode_tps"].get<double>(),
                        r["decode_ceiling_tps"].get<double>());
    const std::string caption = fmt::format(
        "{} ({}), {} threads, {} kernels; perplexity and KL on {} windows of {} tokens of {}; "
        "speed: median of {} runs, prefill {} tokens, decode {} tokens; ceiling = {:.1f} GB/s "
        "measured read bandwidth / weight bytes per token",
        o->model, reference->info().arch, num_threads(), isa_name(qmatmul_isa()),
        evalset.windows.size(), o->ctx, o->text, o->bench.runs, o->bench.prompt, o->bench.gen,
        bandwidth);
    if (!o->out.empty()) {
      std::string text = caption + "\n\n" + md;
      for (const auto& n : notes) text += "\nnote: " + n + "\n";
      write_file_durably(o->out, text);
    }
    if (o->json) {
      for (const auto& n : notes) std::cerr << "note: " << n << "\n";
      print_json({{"model", model_description(o->model, *reference)},
                  {"text", evalset.description},
                  {"threads", num_threads()},
                  {"isa", std::string(isa_name(qmatmul_isa()))},
                  {"read_bandwidth_gbs", bandwidth},
                  {"bench", nlohmann::json{{"prompt", o->bench.prompt}, {"gen", o->bench.gen}, {"runs", o->bench.runs}}},
                  {"rows", out_rows},
                  {"notes", notes}});
      return;
    }
    std::cout << caption << "\n\n" << md;
    for (const auto& n : notes) std::cout << "note: " << n << "\n";
  });
}

}  // namespace kllens::cli
