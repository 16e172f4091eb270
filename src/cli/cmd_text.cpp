// tokenize, ppl and articles: the text side of the tool.
#include <fstream>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "io/durable_file.h"
#include "eval/perplexity.h"
#include "eval/text.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace kllens::cli {

void add_tokenize(CLI::App& app) {
  struct Opts {
    std::string tokenizer, text, out;
    bool special = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("tokenize", "token ids of a text file with a tokenizer.json");
  cmd->add_option("TOKENIZER", o->tokenizer,
                  "Hugging Face tokenizer.json, a model folder holding one, or a GGUF file from "
                  "`kllens quantize` (its embedded tokenizer.json)")
      ->required();
  cmd->add_option("--text", o->text, "text file (UTF-8)")->required();
  cmd->add_option("--out", o->out, "output safetensors file (int32 tensor 'ids')")->required();
  cmd->add_flag("--add-special-tokens", o->special, "apply the tokenizer's post-processor (e.g. BOS)");
  cmd->callback([o] {
    const auto tok = load_tokenizer(o->tokenizer);
    const auto ids = tok.encode(read_text_file(o->text), o->special);
    write_safetensors(o->out, {{"ids", make_i32_tensor({static_cast<int64_t>(ids.size())}, ids)}});
    std::cerr << "wrote " << ids.size() << " ids to " << o->out << "\n";
  });
}

void add_ppl(CLI::App& app) {
  struct Opts {
    std::string model, text;
    int64_t ctx = 512, windows = 0;
    bool json = false;
    RunOptions run;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "ppl", "perplexity on a text: whole text tokenized, non-overlapping windows of --ctx tokens, "
             "state reset per window, every token after the first of a window scored");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  cmd->add_option("--text", o->text, "text file")->required();
  cmd->add_option("--ctx", o->ctx, "window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--windows", o->windows, "use only the first N windows (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o->json, "print {\"ppl\", \"tokens\", \"windows\", \"ctx\"}");
  o->run.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    const std::string text = read_text_file(o->text);
    auto model = open_model(o->model);
    const auto ids = tokenize_with_model_folder(o->model, text);
    const auto windows = make_windows(ids, o->ctx, o->windows);
    const auto r = perplexity(*model, windows);
    if (o->json) {
      print_json({{"ppl", r.ppl}, {"tokens", r.tokens}, {"windows", r.windows}, {"ctx", r.ctx}});
    } else {
      std::cout << fmt::format("perplexity {:.4f} over {} scored tokens ({} windows of {})\n", r.ppl,
                               r.tokens, r.windows, r.ctx);
    }
  });
}

void add_articles(CLI::App& app) {
  struct Opts {
    std::string text, out;
    int first = 0, last = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "articles", "cut WikiText articles first..last (heading lines ' = Title = ') into a file");
  cmd->add_option("TEXT", o->text, "WikiText raw file")->required();
  cmd->add_option("--first", o->first, "first article (0-based)")->required()->check(CLI::NonNegativeNumber);
  cmd->add_option("--last", o->last, "last article (inclusive)")->required()->check(CLI::NonNegativeNumber);
  cmd->add_option("--out", o->out, "output text file")->required();
  cmd->callback([o] {
    const std::string part = select_articles(read_text_file(o->text), o->first, o->last);
    write_file_durably(o->out, part);
    std::cerr << "wrote articles " << o->first << ".." << o->last << " (" << part.size()
              << " bytes) to " << o->out << "\n";
  });
}

}  // namespace kllens::cli
