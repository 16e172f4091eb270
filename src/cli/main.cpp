// kllens: which parts of an SSM / hybrid language model can be quantized hard, and which must
// keep precision — measured with forward passes only.
#include <CLI/CLI.hpp>
#include <malloc.h>

#include <cstdio>
#include <exception>
#include <string>

#include "cli/common.h"
#include "core/cluster.h"
#include "core/error.h"
#include "core/version.h"

namespace {

// An error ends every rank of an MPI job, not only this one (the others may wait in a collective).
int fail_run(int code) {
  if (kllens::Cluster::launched_by_mpi()) {
    try {
      kllens::Cluster::world().abort(code);
    } catch (const kllens::Error&) {  // built without MPI: this process is alone anyway
    }
  }
  kllens::finalize_cluster();
  return code;
}

int finish(int code) {
  kllens::finalize_cluster();
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // Keep freed activation buffers (a few MB per layer in prefill) in the heap instead of
  // returning them to the kernel: otherwise every layer re-faults its pages (measured: 8% of a
  // mamba-130m prefill was page faults).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  CLI::App app{"kllens — KL-guided mixed-precision quantization for SSM and hybrid language models"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");
  app.set_version_flag("--version", "kllens " + std::string(kllens::kllens_version()));
  kllens::cli::add_inspect(app);
  kllens::cli::add_forward(app);
  kllens::cli::add_generate(app);
  kllens::cli::add_tokenize(app);
  kllens::cli::add_ppl(app);
  kllens::cli::add_articles(app);
  kllens::cli::add_imatrix(app);
  kllens::cli::add_sensitivity(app);
  kllens::cli::add_validate_metrics(app);
  kllens::cli::add_plan(app);
  kllens::cli::add_eval(app);
  kllens::cli::add_frontier(app);
  kllens::cli::add_analyze(app);
  kllens::cli::add_quantize(app);
  kllens::cli::add_synth(app);
  kllens::cli::add_bench(app);
  kllens::cli::add_deploy_table(app);
  try {
    // Under mpirun only the sweep is split across ranks; any other command would run N times
    // over, writing the same files.
    if (kllens::Cluster::launched_by_mpi()) {
      if (argc < 2 || std::string(argv[1]) != "sensitivity")
        throw kllens::UsageError("only `kllens sensitivity` runs under mpirun (it splits the "
                                 "sweep's entries across the ranks)");
      (void)kllens::Cluster::world();  // MPI_Init, before any thread starts
    }
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return finish(app.exit(e));
  } catch (const CLI::CallForAllHelp& e) {
    return finish(app.exit(e));
  } catch (const CLI::CallForVersion& e) {
    return finish(app.exit(e));
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    // With no command recognised, CLI11 reports only "A subcommand is required" and drops what it
    // could not match; name that word instead, since it is the actual mistake.
    if (app.get_subcommands().empty()) {
      std::string commands;
      const CLI::App& const_app = app;  // the const overload lists every subcommand
      for (const auto* sub : const_app.get_subcommands([](const CLI::App*) { return true; }))
        commands += (commands.empty() ? "" : ", ") + sub->get_name();
      const auto extra = app.remaining();
      if (extra.empty())
        message = "a command is required (one of: " + commands + ")";
      else if (!extra[0].empty() && extra[0][0] == '-')
        message = "unknown option '" + extra[0] + "'";
      else
        message = "unknown command '" + extra[0] + "' (one of: " + commands + ")";
    }
    std::fprintf(stderr, "error: %s\n", message.c_str());
    std::fprintf(stderr, "run with --help for usage\n");
    return fail_run(2);
  } catch (const kllens::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return fail_run(e.exit_code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return fail_run(1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return fail_run(1);
  }
  kllens::finalize_cluster();
  return 0;
}
