// kllens: which parts of an SSM / hybrid language model can be quantized hard, and which must
// keep precision — measured with forward passes only.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"kllens — KL-guided mixed-precision quantization for SSM and hybrid language models"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");
  kllens::cli::add_inspect(app);
  kllens::cli::add_forward(app);
  kllens::cli::add_generate(app);
  kllens::cli::add_tokenize(app);
  kllens::cli::add_ppl(app);
  kllens::cli::add_articles(app);
  kllens::cli::add_sensitivity(app);
  kllens::cli::add_validate_metrics(app);
  kllens::cli::add_plan(app);
  kllens::cli::add_eval(app);
  kllens::cli::add_frontier(app);
  kllens::cli::add_analyze(app);
  kllens::cli::add_synth(app);
  kllens::cli::add_bench(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    std::fprintf(stderr, "run with --help for usage\n");
    return 2;
  } catch (const kllens::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
