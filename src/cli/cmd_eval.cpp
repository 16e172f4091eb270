// eval: a plan (or one scheme everywhere) applied by fake quantization, compared with the
// full-precision model on a text.
#include <filesystem>
#include <iostream>
#include <optional>

#include "cli/common.h"
#include "core/error.h"
#include "eval/quantized_eval.h"
#include "plan/plan_io.h"

namespace kllens::cli {

void add_eval(CLI::App& app) {
  struct Opts {
    std::string model, plan, uniform, text, reference;
    int64_t ctx = 512, windows = 0;
    bool uniform_all = false, json = false;
    RunOptions run;
    ImatrixOption imatrix;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "eval",
      "apply a plan (or one scheme to every component) by fake quantization and compare with the "
      "full-precision model: perplexity, KL(P_fp || P_q), top-1 agreement, size");
  cmd->add_option("MODEL", o->model,
                  "Hugging Face model folder (with tokenizer.json), or a GGUF file from `kllens "
                  "quantize` (then --reference names its float model)")
      ->required();
  cmd->add_option("--reference", o->reference,
                  "with a GGUF MODEL: the Hugging Face folder it was made from, the full-precision "
                  "side of the comparison (the file runs on its packed weights)");
  auto* plan_opt = cmd->add_option("--plan", o->plan, "PLAN.json written by `kllens plan`");
  auto* uni_opt = cmd->add_option("--uniform", o->uniform,
                                  "one scheme for every component except conv1d (which stays bf16)");
  plan_opt->excludes(uni_opt);
  cmd->add_flag("--uniform-all", o->uniform_all, "with --uniform: quantize conv1d too")->needs(uni_opt);
  cmd->add_option("--text", o->text, "evaluation text")->required();
  cmd->add_option("--ctx", o->ctx, "window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--windows", o->windows, "use only the first N windows (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o->json,
                "print {\"ppl\", \"ppl_fp\", \"kl\": {mean, stderr, median, p90, p99, max}, \"top1\", "
                "\"bytes\", \"bits_per_weight\", ...}");
  o->run.add(cmd);
  o->imatrix.add(cmd);
  cmd->callback([o, plan_opt, uni_opt] {
    o->run.apply();
    std::optional<Plan> plan;
    std::optional<QuantScheme> uniform;
    if (plan_opt->count()) plan = read_plan_json(o->plan);
    if (uni_opt->count()) uniform = QuantScheme::parse(o->uniform);
    const bool gguf = is_gguf_path(o->model);
    if (gguf && (plan || uniform))
      throw CLI::ValidationError("--plan/--uniform", "MODEL is a GGUF file, already quantized: "
                                                     "compare it with --reference FOLDER instead");
    if (gguf && o->reference.empty())
      throw CLI::ValidationError("--reference", "a GGUF MODEL is compared with its float model: "
                                                "give --reference FOLDER");
    if (!gguf && !o->reference.empty())
      throw CLI::ValidationError("--reference", "only with a GGUF MODEL");
    if (gguf && !o->imatrix.path.empty())
      throw CLI::ValidationError("--imatrix", "a GGUF MODEL is already quantized");
    std::unique_ptr<Model> reference;
    if (gguf) reference = open_model(o->reference);
    auto model = open_model(o->model);
    if (!gguf) o->imatrix.load(*model);
    if (plan) check_same_imatrix(plan->extra.value("imatrix", nlohmann::json()), o->imatrix, o->plan,
                                 &plan->components);

    SchemeAssignment assignment;
    std::vector<std::string> unsupported, notes;
    nlohmann::json source;
    if (plan) {
      for (const auto& [name, s] : plan->components) assignment[name] = QuantScheme::parse(s);
      validate_assignment(*model, assignment);
      if (plan->params != model->weights().total_params())
        notes.push_back(fmt::format("the plan was made for a model of {} parameters; this one has {}",
                                    plan->params, model->weights().total_params()));
      source = {{"plan", o->plan}, {"method", plan->method}, {"metric", plan->metric}};
    } else if (uniform) {
      assignment = uniform_assignment(*model, *uniform, o->uniform_all, &unsupported);
      if (!o->uniform_all)
        notes.push_back("conv1d components stay bf16 (--uniform-all quantizes them too)");
      if (!unsupported.empty()) {
        std::string list;
        for (const auto& n : unsupported) list += "\n  " + n;
        notes.push_back(fmt::format("{} component(s) cannot be stored as {} (row length) and are "
                                    "stored as {} as in the GGUF file:{}",
                                    unsupported.size(), uniform->to_string(),
                                    uniform->is_block() ? "llama-quantize's fallback" : "f16", list));
      }
      source = {{"uniform", uniform->to_string()}, {"include_conv1d", o->uniform_all},
                {"imatrix", o->imatrix.identity()}};
    } else if (gguf) {
      source = {{"gguf", o->model}, {"reference", o->reference}};
    } else {
      source = {{"full_precision", true}};
    }
    const auto calib = load_calibration(o->model, o->text, o->ctx, o->windows);
    QuantEvalResult r;
    if (gguf) {
      r = evaluate_models(*reference, *model, calib.windows, !o->json);
      r.bytes = static_cast<int64_t>(std::filesystem::file_size(o->model));
      r.bits_per_weight = 8.0 * static_cast<double>(r.bytes) / static_cast<double>(r.params);
    } else {
      r = evaluate_quantized(*model, assignment, calib.windows, !o->json, o->imatrix.fn());
    }
    const LogitResults& l = r.logits;

    if (o->json) {
      for (const auto& n : notes) std::cerr << "note: " << n << "\n";
      nlohmann::json out = eval_result_json(r);
      out["unsupported"] = unsupported;
      out["source"] = source;
      out["model"] = model_description(o->model, *model);
      out["text"] = calib.description;
      print_json(out);
      return;
    }
    for (const auto& n : notes) std::cout << "note: " << n << "\n";
    const double fp_bytes = 2.0 * static_cast<double>(r.params);
    std::cout << fmt::format(
        "model      {} ({}, {} layers, {} parameters)\n"
        "weights    {}\n"
        "text       {}: {} windows of {} tokens, {} scored\n"
        "size       {:.2f} MB{} = {:.4f} bits per weight ({:.1f}% of bf16)\n",
        o->model, model->info().arch, model->info().n_layers, r.params,
        gguf ? fmt::format("GGUF file on its packed weights, compared with {}", o->reference)
        : plan ? fmt::format("plan {} ({}, {}): {} of {} named components changed", o->plan,
                           plan->method, plan->metric, r.changed.size(), plan->components.size())
        : uniform ? fmt::format("uniform {}: {} components changed", uniform->to_string(), r.changed.size())
                  : std::string("full precision"),
        o->text, r.windows, r.ctx, r.tokens, r.bytes / 1e6,
        gguf ? " (the file)" : " (GGUF tensor data)", r.bits_per_weight,
        100.0 * static_cast<double>(r.bytes) / fp_bytes);
    std::cout << fmt::format(
        "Final estimate: PPL = {:.4f} (full precision {:.4f}, ratio {:.4f}, ln ratio {:.5f} +/- {:.5f})\n",
        r.ppl, r.ppl_fp, r.ppl / r.ppl_fp, l.delta_nll.mean, l.delta_nll.stderr_);
    std::cout << fmt::format(
        "KL(P_fp || P_q): mean {:.6f} +/- {:.6f}, median {:.6f}, p90 {:.6f}, p99 {:.6f}, max {:.6f} "
        "(nats, {} positions)\n",
        l.kl_forward.mean, l.kl_forward.stderr_, l.kl_median, l.kl_p90, l.kl_p99, l.kl_max, l.positions);
    std::cout << fmt::format("Same top token: {:.3f} +/- {:.3f} %\n", 100 * l.top1.mean,
                             100 * l.top1.stderr_);
  });
}

}  // namespace kllens::cli
