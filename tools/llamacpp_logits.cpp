// llamacpp-logits: llama.cpp's float32 logits for given token ids, prefill and decode, written as a
// safetensors file. It is the peer side of the llama.cpp oracle fixtures
// (data/fixtures/llamacpp-oracles, scripts/llamacpp-oracles): built only by that script, against
// a llama.cpp build outside this repository; kllens and its tests never link it.
//
//   llamacpp-logits MODEL.gguf OUT.safetensors IDS [IDS...]
//
// Each IDS is one sequence, token ids separated by commas. Every sequence runs from an empty
// memory twice: all tokens in one batch (prefill) and one token per llama_decode call (decode).
// OUT holds input_ids I32 [B, T], logits F32 [B, T, V] and decode_logits F32 [B, T, V].
#include <llama.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "llamacpp-logits: %s\n", message.c_str());
  std::exit(1);
}

std::vector<llama_token> parse_ids(const char* text) {
  std::vector<llama_token> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 0 || v > INT32_MAX) die("bad token id '" + item + "'");
    ids.push_back(static_cast<llama_token>(v));
  }
  if (ids.empty()) die("an empty sequence");
  return ids;
}

// Runs `ids` from an empty memory in batches of `step` tokens; appends every position's logits.
void run(llama_context* ctx, const std::vector<llama_token>& ids, size_t step, int32_t vocab,
         std::vector<float>& out) {
  llama_memory_clear(llama_get_memory(ctx), true);
  llama_batch batch = llama_batch_init(static_cast<int32_t>(ids.size()), 0, 1);
  for (size_t start = 0; start < ids.size(); start += step) {
    const size_t n = std::min(step, ids.size() - start);
    batch.n_tokens = static_cast<int32_t>(n);
    for (size_t i = 0; i < n; ++i) {
      batch.token[i] = ids[start + i];
      batch.pos[i] = static_cast<llama_pos>(start + i);
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    if (llama_decode(ctx, batch) != 0) die("llama_decode failed");
    for (size_t i = 0; i < n; ++i) {
      const float* row = llama_get_logits_ith(ctx, static_cast<int32_t>(i));
      if (!row) die("no logits");
      out.insert(out.end(), row, row + vocab);
    }
  }
  llama_batch_free(batch);
}

void write_safetensors(const std::string& path, const std::vector<int32_t>& ids,
                       const std::vector<float>& prefill, const std::vector<float>& decode,
                       size_t B, size_t T, size_t V) {
  const size_t ids_bytes = ids.size() * 4, logit_bytes = prefill.size() * 4;
  std::ostringstream h;
  h << "{\"input_ids\":{\"dtype\":\"I32\",\"shape\":[" << B << "," << T
    << "],\"data_offsets\":[0," << ids_bytes << "]},"
    << "\"logits\":{\"dtype\":\"F32\",\"shape\":[" << B << "," << T << "," << V
    << "],\"data_offsets\":[" << ids_bytes << "," << ids_bytes + logit_bytes << "]},"
    << "\"decode_logits\":{\"dtype\":\"F32\",\"shape\":[" << B << "," << T << "," << V
    << "],\"data_offsets\":[" << ids_bytes + logit_bytes << "," << ids_bytes + 2 * logit_bytes
    << "]}}";
  std::string header = h.str();
  while (header.size() % 8) header += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);  // little-endian host (x86-64)
  out << header;
  out.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids_bytes));
  out.write(reinterpret_cast<const char*>(prefill.data()), static_cast<std::streamsize>(logit_bytes));
  out.write(reinterpret_cast<const char*>(decode.data()), static_cast<std::streamsize>(logit_bytes));
  if (!out) die("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) die("usage: llamacpp-logits MODEL.gguf OUT.safetensors IDS [IDS...]");
  std::vector<std::vector<llama_token>> seqs;
  for (int i = 3; i < argc; ++i) seqs.push_back(parse_ids(argv[i]));
  for (const auto& s : seqs)
    if (s.size() != seqs[0].size()) die("every sequence must have the same length");

  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) die(std::string("cannot load ") + argv[1]);
  const int32_t vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  const size_t T = seqs[0].size();
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(T + 16);
  cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(T);
  cp.n_seq_max = 1;
  cp.n_threads = cp.n_threads_batch = 2;
  // An oracle must not round: llama.cpp's default KV cache is F16 (an error of ~1e-4 relative on
  // these logits), and its flash-attention path rounds Q to F16 on the CPU.
  cp.type_k = cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) die("cannot create a context");

  std::vector<int32_t> ids;
  std::vector<float> prefill, decode;
  for (const auto& s : seqs) {
    ids.insert(ids.end(), s.begin(), s.end());
    run(ctx, s, s.size(), vocab, prefill);
    run(ctx, s, 1, vocab, decode);
  }
  write_safetensors(argv[2], ids, prefill, decode, seqs.size(), T, static_cast<size_t>(vocab));
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
