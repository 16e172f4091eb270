// forward: logits for a batch of token ids (prefill or step-by-step decode). generate: greedy.
#include <algorithm>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace kllens::cli {

namespace {
// The model would reject these too, but only this check can name the file and tensor at fault.
void check_vocab(const std::vector<std::vector<int32_t>>& batch, int64_t vocab,
                 const std::string& path, const std::string& tensor) {
  for (size_t b = 0; b < batch.size(); ++b)
    for (size_t t = 0; t < batch[b].size(); ++t)
      if (batch[b][t] >= vocab)
        fail("{}: tensor '{}' holds token id {} at [{}, {}], outside the model's vocabulary [0, {})",
             path, tensor, batch[b][t], b, t, vocab);
}
}  // namespace

void add_forward(CLI::App& app) {
  struct Opts {
    std::string model, ids, tensor = "input_ids", out;
    bool decode = false;
    RunOptions run;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("forward", "float32 logits [batch, seq, vocab] for token ids");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  cmd->add_option("--ids", o->ids, "safetensors file with token ids [batch, seq] or [seq]")->required();
  cmd->add_option("--tensor", o->tensor, "name of the ids tensor in that file")->capture_default_str();
  cmd->add_flag("--decode", o->decode, "compute through the step-by-step (recurrent / KV-cache) path");
  cmd->add_option("--out", o->out, "output safetensors file (tensor 'logits')")->required();
  o->run.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    const auto batch = read_id_batch(o->ids, o->tensor);
    auto model = open_model(o->model);
    const int64_t V = model->info().vocab;
    check_vocab(batch, V, o->ids, o->tensor);
    const auto T = static_cast<int64_t>(batch[0].size());
    std::vector<float> all;
    all.reserve(batch.size() * static_cast<size_t>(T * V));
    for (const auto& seq : batch) {
      const auto logits = o->decode ? model->forward_decode(seq) : model->forward(seq);
      all.insert(all.end(), logits.begin(), logits.end());
    }
    write_safetensors(o->out, {{"logits", make_f32_tensor({static_cast<int64_t>(batch.size()), T, V}, all)}});
    std::cerr << "wrote logits [" << batch.size() << ", " << T << ", " << V << "] to " << o->out
              << (o->decode ? " (decode path)" : " (prefill path)") << "\n";
  });
}

void add_generate(CLI::App& app) {
  struct Opts {
    std::string model, ids, tensor = "input_ids";
    int max_new = 16;
    bool json = false;
    RunOptions run;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("generate", "greedy continuation of token ids; prints the ids");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  cmd->add_option("--ids", o->ids, "safetensors file with prompt ids [batch, seq] or [seq]")->required();
  cmd->add_option("--tensor", o->tensor, "name of the ids tensor in that file")->capture_default_str();
  cmd->add_option("--max-new", o->max_new, "tokens to generate")->required()->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--json", o->json, "print {\"sequences\": [[ids...], ...]} (prompt + new tokens)");
  o->run.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    const auto batch = read_id_batch(o->ids, o->tensor);
    auto model = open_model(o->model);
    const int64_t V = model->info().vocab;
    check_vocab(batch, V, o->ids, o->tensor);
    nlohmann::json sequences = nlohmann::json::array();
    for (const auto& prompt : batch) {
      auto state = model->new_decode_state();
      std::vector<float> logits(static_cast<size_t>(V));
      for (int32_t id : prompt) model->decode_step(*state, id, logits.data());
      std::vector<int32_t> out = prompt;
      for (int i = 0; i < o->max_new; ++i) {
        const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        out.push_back(next);
        if (i + 1 < o->max_new) model->decode_step(*state, next, logits.data());
      }
      sequences.push_back(out);
      if (!o->json) {
        for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? " " : "") << out[i];
        std::cout << "\n";
      }
    }
    if (o->json) print_json({{"sequences", sequences}});
  });
}

}  // namespace kllens::cli
