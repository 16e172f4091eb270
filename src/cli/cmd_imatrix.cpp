// imatrix: collect an importance matrix (llama.cpp's imatrix GGUF) on a calibration text, or
// check and show one (kllens' or llama-imatrix's) against a model.
#include <algorithm>
#include <chrono>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "eval/imatrix.h"

namespace kllens::cli {

namespace {

nlohmann::json entries_json(const ImportanceMatrix& im) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [hf, e] : im.entries) {
    double sum = 0, max = 0;
    for (float v : e.importance) {
      sum += v;
      max = std::max(max, static_cast<double>(v));
    }
    const double mean = e.importance.empty() ? 0.0 : sum / static_cast<double>(e.importance.size());
    out.push_back({{"name", e.file_name},
                   {"hf_name", hf},
                   {"cols", e.cols},
                   {"counts", e.counts},
                   {"importance_mean", mean},
                   {"importance_max", max}});
  }
  return out;
}

std::string entries_table(const nlohmann::json& entries) {
  std::string s = fmt::format("{:<40} {:<52} {:>6} {:>9} {:>12} {:>9}\n", "tensor (in the file)",
                              "component", "cols", "count", "mean E[x²]", "max/mean");
  for (const auto& e : entries) {
    const double mean = e["importance_mean"].get<double>();
    const double max = e["importance_max"].get<double>();
    s += fmt::format("{:<40} {:<52} {:>6} {:>9} {:>12.5g} {:>9.2f}\n",
                     e["name"].get<std::string>(), e["hf_name"].get<std::string>(),
                     e["cols"].get<int64_t>(), e["counts"][0].get<double>(), mean,
                     mean > 0 ? max / mean : 0.0);
  }
  return s;
}

// What `imatrix` prints of a matrix, collected or read: its header, the model, every entry.
nlohmann::json describe(const ImportanceMatrix& im, const std::string& model_path, const Model& model) {
  nlohmann::json j = imatrix_description(im);
  j["model"] = model_description(model_path, model);
  j["tensors"] = entries_json(im);
  return j;
}

}  // namespace

void add_imatrix(CLI::App& app) {
  struct Opts {
    std::string model, calib, out, show;
    int64_t ctx = 512, windows = 0;
    bool json = false;
    RunOptions run;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "imatrix",
      "importance matrix (llama.cpp's imatrix GGUF): per input column of every matrix a linear "
      "layer multiplies, the sum of squared activations and the row count over the calibration "
      "windows; or, with --show, check a file (kllens' or llama-imatrix's) against the model");
  cmd->footer(R"(
Collection follows llama-imatrix on the ppl windows: the text tokenized whole (no BOS), cut into
consecutive --ctx-token windows (a shorter tail dropped), state reset per window; every row each
matrix multiplies counts. Matrices: every projection of every layer (llama.cpp's blk.* matrices)
and an untied lm_head (llama-imatrix needs --process-output for it); a tied head is not collected.
The file uses the tensor names of `kllens quantize` for the model (llama.cpp's for mamba /
mamba2 checkpoints it can hold, so llama-quantize --imatrix reads it; Hugging Face names for the
other families), with general.type = "imatrix", imatrix.datasets = [TEXT as given],
imatrix.chunk_count = windows, imatrix.chunk_size = --ctx. See src/eval/imatrix.h for the two
differences from llama-imatrix's own files (it drops matrix products of < 16 rows, and its chunk
count is derived from the counts).)");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  auto* calib = cmd->add_option("--calib", o->calib, "calibration text");
  auto* ctx = cmd->add_option("--ctx", o->ctx, "window length in tokens (llama-imatrix -c)")
                  ->capture_default_str()
                  ->check(CLI::Range(2, 1 << 20));
  auto* windows = cmd->add_option("--windows", o->windows, "use only the first N windows (0 = all)")
                      ->check(CLI::NonNegativeNumber);
  auto* out = cmd->add_option("--out", o->out, "IMAT.gguf to write");
  auto* show = cmd->add_option("--show", o->show,
                               "read IMAT.gguf instead, check it fits MODEL and show its entries");
  show->excludes(calib)->excludes(out)->excludes(ctx)->excludes(windows);
  cmd->add_flag("--json", o->json,
                "print {\"file\", \"sha256\", \"datasets\", \"chunk_count\", \"chunk_size\", "
                "\"entries\", \"tensors\": [...], ...}");
  o->run.add(cmd);
  cmd->callback([o, calib, out, show] {
    o->run.apply();
    if (!show->count() && (!calib->count() || !out->count()))
      throw UsageError("imatrix needs --calib TEXT and --out IMAT.gguf (or --show IMAT.gguf)");
    if (is_gguf_path(o->model))
      fail("{}: `kllens imatrix` needs the float model the importance matrix is for: give the "
           "Hugging Face folder (a GGUF file's matrices are already quantized)",
           o->model);
    auto model = open_float_model(o->model, "imatrix");

    if (show->count()) {
      const ImportanceMatrix im = read_imatrix(o->show, *model);
      const nlohmann::json j = describe(im, o->model, *model);
      if (o->json) {
        print_json(j);
        return;
      }
      std::cout << entries_table(j["tensors"]);
      std::cout << fmt::format(
          "{}: {} entries fit {} ({} layers); {} chunks of {} tokens; datasets {}; sha256 {}\n",
          o->show, im.entries.size(), model->info().arch, model->info().n_layers, im.chunk_count,
          im.chunk_size, nlohmann::json(im.datasets).dump(), im.sha256);
      return;
    }

    const auto calibration = load_calibration(o->model, o->calib, o->ctx, o->windows);
    const auto t0 = std::chrono::steady_clock::now();
    ImportanceMatrix im = collect_imatrix(*model, calibration.windows, o->calib);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_imatrix(im, *model, o->out);
    nlohmann::json j = describe(im, o->model, *model);
    j["calibration"] = calibration.description;
    j["seconds"] = seconds;
    if (o->json) {
      print_json(j);
      return;
    }
    std::cout << entries_table(j["tensors"]);
    std::cout << fmt::format(
        "{} matrices over {} windows of {} tokens ({} tokens) in {:.1f} s\nwrote {} (sha256 {})\n",
        im.entries.size(), calibration.windows.size(), o->ctx,
        calibration.description["tokens"].get<int64_t>(), seconds, o->out, im.sha256);
  });
}

}  // namespace kllens::cli
