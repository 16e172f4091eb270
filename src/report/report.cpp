#include "report/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include "eval/quantized_eval.h"
#include "models/model.h"
#include "quant/scheme.h"
#include "report/svg.h"
#include "sensitivity/summary.h"

namespace kllens {

using json = nlohmann::json;
using svg::escape_xml;
using svg::format_number;

namespace {

std::string human_bytes(double bytes) {
  if (bytes >= 1e9) return fmt::format("{:.2f} GB", bytes / 1e9);
  if (bytes >= 1e6) return fmt::format("{:.2f} MB", bytes / 1e6);
  if (bytes >= 1e3) return fmt::format("{:.1f} kB", bytes / 1e3);
  return fmt::format("{:.0f} B", bytes);
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f} B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f} M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f} k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string h(std::string_view s) { return escape_xml(s); }

std::string json_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "–";
  return v.dump();
}

// Row label of a layer index in the grids (-1: tensors outside the layers).
std::string layer_label(int layer) { return layer < 0 ? "model" : fmt::format("L{}", layer); }

}  // namespace

json model_summary_json(const Model& model, const std::string& path) {
  const auto& info = model.info();
  const auto bf16 = QuantScheme::parse("bf16");
  const auto int8 = QuantScheme::parse("int8:g32");
  const auto int4 = QuantScheme::parse("int4:g32");
  // The GGUF tensor data of `kllens quantize --uniform` at each scheme (as `inspect` prints).
  const int64_t b16 = uniform_gguf_bytes(model, bf16);
  const int64_t b8 = uniform_gguf_bytes(model, int8);
  const int64_t b4 = uniform_gguf_bytes(model, int4);
  int64_t comp_params = 0;
  json comps = json::array();
  for (const auto& p : model.weights().all()) {
    if (!p->is_component()) continue;
    comp_params += p->numel();
    comps.push_back({{"name", p->name},
                     {"role", std::string(role_name(p->role))},
                     {"layer", p->layer},
                     {"shape", p->shape},
                     {"params", p->numel()},
                     {"tied_head", p->tied_head}});
  }
  json details = json::object();
  for (const auto& [k, v] : info.details) details[k] = v;
  std::error_code ec;
  const auto canonical = std::filesystem::weakly_canonical(path, ec);
  return {{"path", ec ? path : canonical.string()},
          {"arch", info.arch},
          {"layers", info.n_layers},
          {"d_model", info.d_model},
          {"vocab", info.vocab},
          {"prefix_tokens", info.n_prefix_tokens},
          {"layer_kinds", info.layer_kinds},
          {"details", details},
          {"params", model.weights().total_params()},
          {"component_params", comp_params},
          {"components", comps},
          {"bytes", {{"bf16", b16}, {"int8_g32", b8}, {"int4_g32", b4}}}};
}

// ---- heatmap ----

std::pair<double, double> heatmap_log_range(const std::vector<SweepEntry>& entries) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& e : entries) {
    const double kl = e.metrics.kl.mean;
    if (kl > 0 && std::isfinite(kl)) {
      lo = std::min(lo, std::log10(kl));
      hi = std::max(hi, std::log10(kl));
    }
  }
  if (!std::isfinite(lo)) return {-6, -1};
  if (hi - lo < 1) {
    const double mid = (hi + lo) / 2;
    lo = mid - 0.5, hi = mid + 0.5;
  }
  return {lo, hi};
}

std::string heatmap_svg(const std::vector<SweepEntry>& entries, const std::string& scheme, double log_lo,
                        double log_hi) {
  std::vector<std::string> roles;
  std::set<int> layer_set;
  struct Cell {
    double kl = -1;  // max over the cell's components (usually one)
    std::string tip;
  };
  std::map<std::pair<int, std::string>, Cell> cells;
  for (const auto& e : entries) {
    if (e.scheme != scheme) continue;
    if (std::find(roles.begin(), roles.end(), e.role) == roles.end()) roles.push_back(e.role);
    layer_set.insert(e.layer);
    Cell& c = cells[{e.layer, e.role}];
    c.kl = std::max(c.kl, e.metrics.kl.mean);
    if (!c.tip.empty()) c.tip += "\n";
    c.tip += fmt::format("{} ({})\nKL(P_fp||P_q) = {:.4g} ± {:.2g} nats; top-1 {:.2f}%; SQNR {:.1f} dB", e.component,
                         e.scheme, e.metrics.kl.mean, e.metrics.kl.stderr_, 100 * e.metrics.top1.mean,
                         e.metrics.sqnr_db.mean);
  }
  const std::vector<int> layers(layer_set.begin(), layer_set.end());  // -1 ("model") first
  // Narrower cells for hybrids with many roles, so two heatmaps fit side by side.
  const double cw = roles.size() > 7 ? 50 : 64, ch = layers.size() > 16 ? 16 : 26;
  const double left = 64, top = 86, bar_w = 16;
  const double grid_w = cw * static_cast<double>(std::max<size_t>(1, roles.size()));
  const double grid_h = ch * static_cast<double>(std::max<size_t>(1, layers.size()));
  svg::Svg s(left + grid_w + 120, top + std::max(grid_h, 160.0) + 30);
  s.set_label("sensitivity heatmap " + scheme);
  svg::TextStyle title;
  title.size = 14;
  title.weight = "bold";
  s.text(4, 18, "scheme " + scheme + ": log10 KL(P_fp || P_q) per component", title);
  if (roles.empty()) {
    s.text(left, top + 20, "no entries for this scheme");
    return s.str();
  }
  const auto color_of = [&](double kl) {
    if (!(kl > 0) || !std::isfinite(kl)) return std::string("#d9d9d9");
    return svg::viridis((std::log10(kl) - log_lo) / (log_hi - log_lo)).hex();
  };
  svg::TextStyle head;
  head.size = 11;
  head.rotate = -35;
  for (size_t j = 0; j < roles.size(); ++j)
    s.text(left + cw * (static_cast<double>(j) + 0.35), top - 6, roles[j], head);
  svg::TextStyle rowlab;
  rowlab.size = 11;
  rowlab.anchor = "end";
  rowlab.baseline = "middle";
  svg::TextStyle val;
  val.size = 9.5;
  val.anchor = "middle";
  val.baseline = "middle";
  for (size_t i = 0; i < layers.size(); ++i) {
    const double y = top + ch * static_cast<double>(i);
    s.text(left - 6, y + ch / 2, layer_label(layers[i]), rowlab);
    for (size_t j = 0; j < roles.size(); ++j) {
      const double x = left + cw * static_cast<double>(j);
      auto it = cells.find({layers[i], roles[j]});
      if (it == cells.end()) {
        s.rect(x, y, cw, ch, "#f4f4f4", {}, "#ffffff", 1);
        continue;
      }
      const double kl = it->second.kl;
      s.rect(x, y, cw, ch, color_of(kl), it->second.tip, "#ffffff", 1);
      if (ch >= 20 && kl > 0) {
        const double t = (std::log10(kl) - log_lo) / (log_hi - log_lo);
        val.fill = t > 0.6 ? "#111" : "#fff";
        s.text(x + cw / 2, y + ch / 2, fmt::format("{:.1e}", kl), val);
      }
    }
  }
  // Colour bar, shared by every heatmap of the report.
  const double bx = left + grid_w + 24, by = top, bh = std::max(grid_h, 160.0);
  const int steps = 48;
  for (int k = 0; k < steps; ++k) {
    const double t = 1 - (k + 0.5) / steps;
    s.rect(bx, by + bh * k / steps, bar_w, bh / steps + 0.5, svg::viridis(t).hex());
  }
  s.rect(bx, by, bar_w, bh, "none", {}, "#555", 1);
  svg::TextStyle tick;
  tick.size = 10.5;
  tick.baseline = "middle";
  const svg::Scale bar(log_lo, log_hi, by + bh, by);
  for (double v : bar.ticks(5)) {
    s.line(bx + bar_w, bar(v), bx + bar_w + 4, bar(v), "#555");
    s.text(bx + bar_w + 7, bar(v), "1e" + format_number(v, 2), tick);
  }
  svg::TextStyle cap;
  cap.size = 10.5;
  s.text(bx - 4, by - 10, "KL, nats", cap);
  return s.str();
}

// ---- frontier ----

std::string frontier_svg(const std::vector<FrontierRow>& rows) {
  auto drawable = [](const FrontierRow& r) { return r.feasible && std::isfinite(r.eval.ppl) && r.eval.ppl > 0; };
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo, fp_bits = -1;
  for (const auto& r : rows) {
    if (!drawable(r)) continue;
    ylo = std::min(ylo, r.eval.ppl);
    yhi = std::max(yhi, r.eval.ppl);
    if (r.method == "fp") {
      fp_bits = r.eval.bits_per_weight;
      continue;
    }
    xlo = std::min(xlo, r.eval.bits_per_weight);
    xhi = std::max(xhi, r.eval.bits_per_weight);
  }
  const double W = 980, H = 540;
  svg::Svg s(W, H);
  s.set_label("size versus perplexity frontier");
  if (!std::isfinite(ylo)) {
    s.text(20, 40, "no evaluated configurations");
    return s.str();
  }
  // Full precision (16 bits) sits far right of every plan; drawn on the same axis it would
  // squeeze the plans into a third of the width. It gets its own narrow panel past an axis
  // break instead, plus a dashed reference line at its perplexity across the plot.
  const bool broken = fp_bits > 0 && std::isfinite(xhi) && fp_bits > 1.25 * xhi;
  if (!std::isfinite(xlo)) xlo = xhi = fp_bits;
  if (!broken && fp_bits > 0) xlo = std::min(xlo, fp_bits), xhi = std::max(xhi, fp_bits);
  svg::Axes a;
  a.left = 80, a.top = 20, a.right = broken ? 590 : 650, a.bottom = H - 70;
  const double panel_l = 612, panel_r = 650, panel_x = (panel_l + panel_r) / 2;
  const bool logy = yhi / ylo > 2;
  a.x = svg::Scale(xlo, xhi, a.left, a.right).nice(8);
  a.x = svg::Scale(a.x.lo() - 0.25, a.x.hi() + 0.25, a.left, a.right);
  a.y = svg::Scale(ylo, yhi, a.bottom, a.top, logy).nice(6);
  if (!logy) {
    const double pad = 0.04 * (a.y.hi() - a.y.lo());
    a.y = svg::Scale(a.y.lo() - pad, a.y.hi() + pad, a.bottom, a.top);
  }
  svg::draw_axes(s, a, "bits per weight (all weights, scales included)",
                 logy ? "perplexity (log scale)" : "perplexity");
  auto px_of = [&](const FrontierRow& r) {
    return broken && r.method == "fp" ? panel_x : a.x(r.eval.bits_per_weight);
  };
  if (broken) {
    s.rect(panel_l, a.top, panel_r - panel_l, a.bottom - a.top, "#ffffff", {}, "#555", 1);
    for (double v : a.y.ticks(6)) s.line(panel_l, a.y(v), panel_r, a.y(v), "#e6e6e6", 1);
    s.rect(panel_l, a.top, panel_r - panel_l, a.bottom - a.top, "none", {}, "#555", 1);
    // Break marks on the x axis between the two panels.
    for (double x0 : {a.right + 5.0, panel_l - 9.0}) s.line(x0, a.bottom + 6, x0 + 5, a.bottom - 6, "#555", 1.2);
    svg::TextStyle tick;
    tick.size = 11;
    tick.fill = "#333";
    tick.anchor = "middle";
    s.line(panel_x, a.bottom, panel_x, a.bottom + 5, "#555", 1);
    s.text(panel_x, a.bottom + 18, format_number(fp_bits), tick);
  }

  // Colour by metric, line style by method: a curve is one (method, metric).
  std::vector<std::string> metrics;
  for (const auto& r : rows)
    if (!r.metric.empty() && std::find(metrics.begin(), metrics.end(), r.metric) == metrics.end())
      metrics.push_back(r.metric);
  auto metric_color = [&](const std::string& m) {
    return svg::series_color(static_cast<size_t>(std::find(metrics.begin(), metrics.end(), m) - metrics.begin()));
  };
  auto dash_of = [](const std::string& method) { return method == "points" ? std::string("6 4") : std::string(); };
  auto tip_of = [](const FrontierRow& r) {
    return fmt::format("{}\n{:.4f} bits/weight, {} bytes\nperplexity {:.4f} (full precision {:.4f})\nKL {:.3e} ± "
                       "{:.1e}, top-1 {:.2f}%",
                       r.label, r.eval.bits_per_weight, r.eval.bytes, r.eval.ppl, r.eval.ppl_fp,
                       r.eval.logits.kl_forward.mean, r.eval.logits.kl_forward.stderr_,
                       100 * r.eval.logits.top1.mean);
  };
  std::vector<svg::LegendItem> legend;
  for (const auto& r : rows)
    if (r.method == "fp" && drawable(r)) {
      const double py = a.y(r.eval.ppl);
      s.line(a.left, py, broken ? panel_r : a.right, py, "#777777", 1, "2 3");
    }
  std::vector<std::pair<std::string, std::string>> curves;  // (method, metric) in row order
  for (const auto& r : rows)
    if ((r.method == "optimal" || r.method == "points") &&
        std::find(curves.begin(), curves.end(), std::make_pair(r.method, r.metric)) == curves.end())
      curves.emplace_back(r.method, r.metric);
  for (const auto& [method, metric] : curves) {
    std::vector<const FrontierRow*> pts;
    for (const auto& r : rows)
      if (r.method == method && r.metric == metric && drawable(r)) pts.push_back(&r);
    std::sort(pts.begin(), pts.end(), [](const FrontierRow* x, const FrontierRow* y) {
      return x->eval.bits_per_weight < y->eval.bits_per_weight;
    });
    std::vector<std::pair<double, double>> line;
    for (const auto* r : pts) line.emplace_back(a.x(r->eval.bits_per_weight), a.y(r->eval.ppl));
    const std::string color = metric_color(metric);
    s.polyline(line, color, 2, dash_of(method));
    for (const auto* r : pts)
      s.marker("circle", a.x(r->eval.bits_per_weight), a.y(r->eval.ppl), 3.5, color, tip_of(*r));
    legend.push_back({color, "line", method + " / " + metric, dash_of(method)});
  }
  for (const auto& r : rows) {
    if (r.method != "greedy" || !drawable(r)) continue;
    s.marker("triangle", a.x(r.eval.bits_per_weight), a.y(r.eval.ppl), 5, metric_color(r.metric), tip_of(r));
    legend.push_back({metric_color(r.metric), "triangle", "greedy / " + r.metric, ""});
  }
  svg::TextStyle lab;
  lab.size = 11;
  int k = 0;
  bool uniform_legend = false;
  for (const auto& r : rows) {
    if ((r.method != "uniform" && r.method != "mix" && r.method != "fp") || !drawable(r)) continue;
    const double px = px_of(r), py = a.y(r.eval.ppl);
    const bool fp = r.method == "fp";
    s.marker(fp ? "diamond" : "square", px, py, 5, fp ? "#111111" : "#9d9d9d", tip_of(r));
    if (fp) {
      lab.anchor = "end";
      s.text(px + 8, py - 10, "full precision", lab);
      legend.push_back({"#111111", "diamond", "full precision (bf16; dotted line)", ""});
      continue;
    }
    // Alternate sides (right-above, left-below): the g0 and g32 points of one width sit close
    // together. Labels near an edge go inwards.
    bool right = k++ % 2 == 0;
    if (right && px > a.right - 60) right = false;
    if (!right && px < a.left + 60) right = true;
    lab.anchor = right ? "start" : "end";
    s.text(px + (right ? 8 : -8), py + (right ? -8 : 15), r.point, lab);
    if (!uniform_legend) {
      legend.push_back({"#9d9d9d", "square", "uniform (labelled)", ""});
      uniform_legend = true;
    }
  }
  svg::TextStyle lt;
  lt.size = 12;
  lt.weight = "bold";
  s.text(670, a.top + 10, "legend", lt);
  svg::draw_legend(s, 666, a.top + 18, legend);
  return s.str();
}

// ---- plan grid ----

std::string plan_grid_svg(const std::map<std::string, std::string>& components, const json& model_summary) {
  std::vector<std::string> roles, schemes;
  std::set<int> layer_set;
  std::map<std::pair<int, std::string>, std::vector<std::pair<std::string, std::string>>> cells;
  for (const auto& c : model_summary.at("components")) {
    const std::string name = c.at("name").get<std::string>();
    auto it = components.find(name);
    if (it == components.end()) continue;
    const std::string role = c.at("role").get<std::string>();
    const int layer = c.at("layer").get<int>();
    if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
    layer_set.insert(layer);
    cells[{layer, role}].emplace_back(name, it->second);
    if (std::find(schemes.begin(), schemes.end(), it->second) == schemes.end()) schemes.push_back(it->second);
  }
  std::sort(schemes.begin(), schemes.end(), [](const std::string& x, const std::string& y) {
    // Keep first, then by bits, widest first.
    auto bits = [](const std::string& s) {
      try {
        const auto q = QuantScheme::parse(s);
        return q.is_keep() ? 100.0 + q.bits : static_cast<double>(q.bits) + (q.group_size == 0 ? 0.5 : 0.0);
      } catch (...) {
        return 0.0;
      }
    };
    return bits(x) > bits(y);
  });
  auto color = [&](const std::string& scheme) {
    if (scheme == "bf16") return std::string("#bdbdbd");
    static const std::vector<std::string> p = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2"};
    size_t i = 0;
    for (const auto& s : schemes) {
      if (s == "bf16") continue;
      if (s == scheme) break;
      ++i;
    }
    return p[i % p.size()];
  };
  const std::vector<int> layers(layer_set.begin(), layer_set.end());
  const double cw = 72, ch = layers.size() > 16 ? 16 : 24, left = 64, top = 70;
  const double grid_w = cw * static_cast<double>(std::max<size_t>(1, roles.size()));
  const double grid_h = ch * static_cast<double>(std::max<size_t>(1, layers.size()));
  svg::Svg s(left + grid_w + 200, top + std::max(grid_h, 24.0 * static_cast<double>(schemes.size()) + 20) + 20);
  s.set_label("scheme per component");
  svg::TextStyle head;
  head.size = 11;
  head.rotate = -35;
  for (size_t j = 0; j < roles.size(); ++j) s.text(left + cw * (static_cast<double>(j) + 0.35), top - 6, roles[j], head);
  svg::TextStyle rowlab;
  rowlab.size = 11;
  rowlab.anchor = "end";
  rowlab.baseline = "middle";
  svg::TextStyle val;
  val.size = 9.5;
  val.anchor = "middle";
  val.baseline = "middle";
  val.fill = "#111";
  for (size_t i = 0; i < layers.size(); ++i) {
    const double y = top + ch * static_cast<double>(i);
    s.text(left - 6, y + ch / 2, layer_label(layers[i]), rowlab);
    for (size_t j = 0; j < roles.size(); ++j) {
      const double x = left + cw * static_cast<double>(j);
      auto it = cells.find({layers[i], roles[j]});
      if (it == cells.end()) {
        s.rect(x, y, cw, ch, "#f4f4f4", {}, "#ffffff", 1);
        continue;
      }
      std::string tip, shown;
      for (const auto& [name, scheme] : it->second) {
        tip += (tip.empty() ? "" : "\n") + name + ": " + scheme;
        shown = shown.empty() ? scheme : (shown == scheme ? shown : "mixed");
      }
      s.rect(x, y, cw, ch, shown == "mixed" ? "#ffffff" : color(shown), tip, "#ffffff", 1);
      if (ch >= 20) s.text(x + cw / 2, y + ch / 2, shown, val);
    }
  }
  std::vector<svg::LegendItem> legend;
  for (const auto& sc : schemes) legend.push_back({color(sc), "square", sc == "bf16" ? "bf16 (kept)" : sc, ""});
  svg::draw_legend(s, left + grid_w + 20, top, legend);
  return s.str();
}

// ---- the page ----

namespace {

const char* kCss = R"(
body { font-family: Helvetica, Arial, sans-serif; margin: 24px 32px; color: #222; max-width: 1340px; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 20px; margin-top: 36px; border-bottom: 2px solid #4e79a7; padding-bottom: 4px; }
h3 { font-size: 16px; margin-top: 22px; }
p.lead { color: #555; margin-top: 0; }
p.note { color: #555; font-size: 13px; max-width: 980px; }
table { border-collapse: collapse; margin: 10px 0 16px 0; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; text-align: left; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #fff4d6; font-weight: bold; }
tr.muted td { color: #888; }
.figure { margin: 8px 0 18px 0; overflow-x: auto; }
.row { display: flex; flex-wrap: wrap; gap: 12px 36px; align-items: flex-start; }
.row h3 { margin-top: 0; }
.kinds { columns: 3; font-size: 13px; }
nav a { margin-right: 14px; }
code { background: #f4f4f4; padding: 1px 4px; }
)";

std::string td(const std::string& v, bool num = false) {
  return fmt::format("<td{}>{}</td>", num ? " class=\"num\"" : "", h(v));
}
std::string th(const std::string& v) { return "<th>" + h(v) + "</th>"; }

std::string fixed(double v, int decimals) {
  return std::isfinite(v) ? fmt::format("{:.{}f}", v, decimals) : std::string("–");
}
std::string sci(double v) { return std::isfinite(v) ? fmt::format("{:.3e}", v) : std::string("–"); }

std::string section_model(const json& m) {
  std::string o = "<h2 id=\"model\">Model</h2>\n<div class=\"row\">\n<div>\n<table>\n";
  const int64_t params = m.value("params", int64_t{0});
  o += "<tr>" + th("path") + td(m.value("path", "")) + "</tr>\n";
  o += "<tr>" + th("architecture") + td(m.value("arch", "")) + "</tr>\n";
  o += "<tr>" + th("layers") + td(std::to_string(m.value("layers", 0))) + "</tr>\n";
  o += "<tr>" + th("d_model") + td(std::to_string(m.value("d_model", 0))) + "</tr>\n";
  o += "<tr>" + th("vocabulary") + td(std::to_string(m.value("vocab", 0))) + "</tr>\n";
  if (m.value("prefix_tokens", 0) > 0 && !(m.contains("details") && m["details"].contains("meta_tokens")))
    o += "<tr>" + th("meta tokens") + td(std::to_string(m.value("prefix_tokens", 0))) + "</tr>\n";
  if (m.contains("details"))
    for (const auto& [k, v] : m["details"].items()) o += "<tr>" + th(k) + td(json_text(v)) + "</tr>\n";
  o += "<tr>" + th("parameters") +
       td(fmt::format("{} ({}; {} in {} quantizable components)", params, human_count(static_cast<double>(params)),
                      m.value("component_params", int64_t{0}), m.contains("components") ? m["components"].size() : 0)) +
       "</tr>\n";
  if (m.contains("bytes")) {
    const auto& b = m["bytes"];
    auto size = [&](const char* key) {
      const double bytes = b.value(key, 0.0);
      return fmt::format("{} ({:.3f} bits per weight)", human_bytes(bytes),
                         params ? 8 * bytes / static_cast<double>(params) : 0.0);
    };
    o += "<tr>" + th("size bf16 (GGUF tensor data)") + td(size("bf16")) + "</tr>\n";
    o += "<tr>" + th("size int8:g32 (GGUF, uniform)") + td(size("int8_g32")) + "</tr>\n";
    o += "<tr>" + th("size int4:g32 (GGUF, uniform)") + td(size("int4_g32")) + "</tr>\n";
  }
  o += "</table>\n</div>\n<div>\n";
  if (m.contains("components")) {
    struct RoleSum {
      int n = 0;
      int64_t params = 0;
      std::string shape;
    };
    std::vector<std::string> order;
    std::map<std::string, RoleSum> by_role;
    for (const auto& c : m["components"]) {
      const std::string role = c.value("role", "");
      if (!by_role.count(role)) order.push_back(role);
      auto& r = by_role[role];
      ++r.n;
      r.params += c.value("params", int64_t{0});
      if (r.shape.empty()) {
        std::string sh;
        for (const auto& d : c["shape"]) sh += (sh.empty() ? "" : "×") + std::to_string(d.get<int64_t>());
        r.shape = sh;
      }
    }
    o += "<h3>Components by role</h3>\n<table>\n<tr>" + th("role") + th("components") + th("shape (first)") +
         th("parameters") + th("share of all parameters") + th("bf16 size") + "</tr>\n";
    for (const auto& role : order) {
      const auto& r = by_role[role];
      o += "<tr>" + td(role) + td(std::to_string(r.n), true) + td(r.shape) + td(std::to_string(r.params), true) +
           td(fmt::format("{:.2f}%", params ? 100.0 * static_cast<double>(r.params) / static_cast<double>(params) : 0),
              true) +
           td(human_bytes(2.0 * static_cast<double>(r.params)), true) + "</tr>\n";
    }
    o += "</table>\n";
  }
  if (m.contains("layer_kinds") && !m["layer_kinds"].empty()) {
    o += "<h3>Layers</h3>\n<ol start=\"0\" class=\"kinds\">\n";
    for (const auto& k : m["layer_kinds"]) o += "<li>" + h(json_text(k)) + "</li>\n";
    o += "</ol>\n";
  }
  return o + "</div>\n</div>\n";
}

std::string section_heatmaps(const SensitivityReport& sens) {
  std::string o = "<h2 id=\"heatmap\">Sensitivity heatmap</h2>\n";
  o += "<p class=\"note\">Each cell is one component quantized alone (everything else at full precision): the "
       "mean forward KL(P_fp || P_q) of the next-token distributions over the calibration positions, on a "
       "log10 colour scale shared by all schemes (brighter = more damage). Hover a cell for the component, its "
       "KL ± standard error, top-1 agreement and SQNR. Empty cells: the layer has no such component.</p>\n";
  const auto [lo, hi] = heatmap_log_range(sens.entries);
  std::vector<std::string> schemes = sens.schemes;
  for (const auto& e : sens.entries)
    if (std::find(schemes.begin(), schemes.end(), e.scheme) == schemes.end()) schemes.push_back(e.scheme);
  o += "<div class=\"row\">\n";
  for (const auto& s : schemes) o += "<div class=\"figure\">\n" + heatmap_svg(sens.entries, s, lo, hi) + "</div>\n";
  return o + "</div>\n";
}

std::string section_ranking(const SensitivityReport& sens) {
  std::string o = "<h2 id=\"ranking\">Ranking</h2>\n";
  std::vector<const SweepEntry*> sorted;
  for (const auto& e : sens.entries) sorted.push_back(&e);
  std::stable_sort(sorted.begin(), sorted.end(), [](const SweepEntry* a, const SweepEntry* b) {
    return a->metrics.kl.mean > b->metrics.kl.mean;
  });
  const size_t top = std::min<size_t>(15, sorted.size());
  o += fmt::format("<h3>Most sensitive entries (top {} of {})</h3>\n", top, sorted.size());
  o += "<table>\n<tr>" + th("#") + th("component") + th("role") + th("layer") + th("scheme") +
       th("KL(fp‖q) ± se") + th("KL(q‖fp)") + th("logit MSE") + th("SQNR dB") + th("top-1") + th("ΔNLL") + "</tr>\n";
  for (size_t i = 0; i < top; ++i) {
    const auto& e = *sorted[i];
    const auto& m = e.metrics;
    o += "<tr>" + td(std::to_string(i + 1), true) + td(e.component) + td(e.role) + td(layer_label(e.layer)) +
         td(e.scheme) + td(fmt::format("{:.3e} ± {:.1e}", m.kl.mean, m.kl.stderr_), true) + td(sci(m.rkl.mean), true) +
         td(sci(m.mse.mean), true) + td(fixed(m.sqnr_db.mean, 2), true) +
         td(fmt::format("{:.2f}%", 100 * m.top1.mean), true) + td(sci(m.dnll.mean), true) + "</tr>\n";
  }
  o += "</table>\n";
  // Roles ranked: one row per role, the schemes side by side, ordered by the first scheme's
  // mean KL (the most damaging scheme is usually listed first).
  const auto ranks = rank_roles(sens.entries);
  std::vector<std::string> schemes, roles;
  std::map<std::pair<std::string, std::string>, const RoleRank*> by;
  for (const auto& r : ranks) {
    if (std::find(schemes.begin(), schemes.end(), r.scheme) == schemes.end()) schemes.push_back(r.scheme);
    if (std::find(roles.begin(), roles.end(), r.role) == roles.end()) roles.push_back(r.role);
    by[{r.role, r.scheme}] = &r;
  }
  o += "<h3>Roles ranked (mean KL over the role's components)</h3>\n<table>\n<tr>" + th("#") + th("role") +
       th("components");
  for (const auto& sc : schemes) o += th(sc + " mean KL") + th(sc + " max KL");
  o += th(schemes.empty() ? std::string("most sensitive") : "most sensitive at " + schemes.front()) + "</tr>\n";
  for (size_t i = 0; i < roles.size(); ++i) {
    const auto& role = roles[i];
    const RoleRank* first = by.count({role, schemes.front()}) ? by[{role, schemes.front()}] : nullptr;
    int n = 0;
    for (const auto& sc : schemes)
      if (by.count({role, sc})) n = std::max(n, by[{role, sc}]->components);
    o += "<tr>" + td(std::to_string(i + 1), true) + td(role) + td(std::to_string(n), true);
    for (const auto& sc : schemes) {
      const RoleRank* r = by.count({role, sc}) ? by[{role, sc}] : nullptr;
      o += td(r ? sci(r->mean_kl) : "–", true) + td(r ? sci(r->max_kl) : "–", true);
    }
    o += td(first ? first->worst_component : "–") + "</tr>\n";
  }
  o += "</table>\n";
  return o;
}

std::string frontier_table(const std::vector<FrontierRow>& rows, const std::string& chosen) {
  std::string o = "<table>\n<tr>" + th("configuration") + th("method") + th("metric") + th("budget") + th("bytes") +
                  th("bits/weight") + th("perplexity") + th("KL mean ± se") + th("KL p99") + th("top-1") +
                  th("note") + "</tr>\n";
  for (const auto& r : rows) {
    const std::string cls = r.label == chosen ? " class=\"chosen\"" : (!r.feasible ? " class=\"muted\"" : "");
    o += "<tr" + cls + ">" + td(r.label) + td(r.method) + td(r.metric.empty() ? "–" : r.metric) +
         td(r.budget ? format_number(*r.budget, 4) : "–", true);
    if (!r.feasible) {
      o += td("–", true) + td("–", true) + td("–", true) + td("–", true) + td("–", true) + td("–", true);
    } else {
      const auto& l = r.eval.logits;
      o += td(std::to_string(r.eval.bytes), true) + td(fixed(r.eval.bits_per_weight, 4), true) +
           td(fixed(r.eval.ppl, 4), true) + td(fmt::format("{:.3e} ± {:.1e}", l.kl_forward.mean, l.kl_forward.stderr_), true) +
           td(sci(l.kl_p99), true) + td(fmt::format("{:.2f}%", 100 * l.top1.mean), true);
    }
    o += td(r.note) + "</tr>\n";
  }
  return o + "</table>\n";
}

const FrontierRow* find_row(const std::vector<FrontierRow>& rows, const std::string& label) {
  for (const auto& r : rows)
    if (r.label == label) return &r;
  return nullptr;
}

std::string section_paper_table(const ReportInputs& in) {
  std::string o = "<h2 id=\"chosen\">Chosen plan versus uniform INT8 / INT4 and full precision</h2>\n";
  o += fmt::format(
      "<p class=\"note\">The paper's comparison (its Table 4: full precision, uniform INT8, uniform INT4, "
      "KL-guided mixed precision) for this model, on the evaluation text. The chosen plan is <b>{}</b>: the least "
      "summed calibration KL within {} bits per weight over all weights. Uniform rows quantize every component "
      "but conv1d; g0 = one scale per row (the paper's per-channel NNCF setting), g32 = one scale per 32 weights. "
      "\"mix Q4_K_M\" and the like are llama-quantize's stock mixes as llama.cpp would choose them for this "
      "model, each followed by the KL-optimal plan at exactly its bytes. "
      "Sizes are the GGUF file's tensor data (every tensor, scales included); full precision is the bf16 "
      "checkpoint.</p>\n",
      h(in.chosen_label), format_number(in.budget, 4));
  const FrontierRow* fp = nullptr;
  for (const auto& r : in.frontier)
    if (r.method == "fp") fp = &r;
  std::vector<const FrontierRow*> rows;
  if (fp) rows.push_back(fp);
  for (const auto& r : in.frontier)
    if (r.method == "uniform") rows.push_back(&r);
  if (const auto* c = find_row(in.frontier, in.chosen_label)) rows.push_back(c);
  // What engineers ship: llama-quantize's stock mixes, each beside the KL plan at its bytes.
  for (const auto& r : in.frontier) {
    if (r.method != "mix") continue;
    rows.push_back(&r);
    if (const auto* k = find_row(in.frontier, "optimal/kl @" + r.point)) rows.push_back(k);
  }
  // The published selections next to ours: the points configuration at the same budget, the
  // paper's p05, greedy.
  for (const auto& r : in.frontier)
    if (r.method == "points" && r.metric == "kl" && r.budget && *r.budget == in.budget) rows.push_back(&r);
  for (const auto& r : in.frontier)
    if (r.method == "points" && r.metric == "kl" && !r.budget) rows.push_back(&r);
  for (const auto& r : in.frontier)
    if (r.method == "greedy" && r.metric == "kl") rows.push_back(&r);
  const double fp_bytes = fp && fp->feasible ? static_cast<double>(fp->eval.bytes) : 0;
  o += "<table>\n<tr>" + th("configuration") + th("bytes") + th("size") + th("vs bf16") + th("bits/weight") + th("perplexity") +
       th("Δ perplexity") + th("KL mean ± se") + th("KL p99") + th("top-1") + "</tr>\n";
  for (const auto* r : rows) {
    const std::string cls = r->label == in.chosen_label ? " class=\"chosen\"" : "";
    o += "<tr" + cls + ">" + td(r->label);
    if (!r->feasible) {
      o += "<td colspan=\"9\">" + h(r->note) + "</td></tr>\n";
      continue;
    }
    const auto& l = r->eval.logits;
    o += td(std::to_string(r->eval.bytes), true) + td(human_bytes(static_cast<double>(r->eval.bytes)), true) +
         td(fp_bytes > 0 ? fmt::format("{:.2f}×", fp_bytes / static_cast<double>(r->eval.bytes)) : "–", true) +
         td(fixed(r->eval.bits_per_weight, 3), true) + td(fixed(r->eval.ppl, 4), true) +
         td(fmt::format("{:+.2f}%", 100 * (r->eval.ppl / r->eval.ppl_fp - 1)), true) +
         td(fmt::format("{:.3e} ± {:.1e}", l.kl_forward.mean, l.kl_forward.stderr_), true) + td(sci(l.kl_p99), true) +
         td(fmt::format("{:.2f}%", 100 * l.top1.mean), true) + "</tr>\n";
  }
  o += "</table>\n";
  if (!find_row(in.frontier, in.chosen_label))
    o += "<p class=\"note\">The chosen plan is not among the evaluated rows.</p>\n";
  return o;
}

std::string section_assignment(const ReportInputs& in) {
  std::string o = "<h2 id=\"assignment\">Scheme per component</h2>\n";
  const FrontierRow* c = find_row(in.frontier, in.chosen_label);
  if (!c || c->components.empty()) return o + "<p class=\"note\">No chosen plan.</p>\n";
  o += fmt::format("<p class=\"note\">The scheme each component got in <b>{}</b> (bf16 = kept at full precision; "
                   "conv1d stays bf16 by default). Hover a cell for the tensor names.</p>\n",
                   h(c->label));
  o += "<div class=\"figure\">\n" + plan_grid_svg(c->components, in.model) + "</div>\n";
  std::vector<std::string> roles, schemes;
  std::map<std::string, std::map<std::string, int>> counts;
  std::map<std::string, std::string> role_of;
  if (in.model.contains("components"))
    for (const auto& comp : in.model["components"]) role_of[comp.value("name", "")] = comp.value("role", "");
  for (const auto& [name, scheme] : c->components) {
    const std::string role = role_of.count(name) ? role_of[name] : "?";
    if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
    if (std::find(schemes.begin(), schemes.end(), scheme) == schemes.end()) schemes.push_back(scheme);
    ++counts[role][scheme];
  }
  std::sort(schemes.begin(), schemes.end());
  o += "<table>\n<tr>" + th("role");
  for (const auto& s : schemes) o += th(s);
  o += "</tr>\n";
  for (const auto& r : roles) {
    o += "<tr>" + td(r);
    for (const auto& s : schemes) o += td(counts[r].count(s) ? std::to_string(counts[r][s]) : "–", true);
    o += "</tr>\n";
  }
  return o + "</table>\n";
}

}  // namespace

std::string render_report_html(const ReportInputs& in) {
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  o += "<title>" + h(in.title) + "</title>\n<style>" + std::string(kCss) + "</style>\n</head>\n<body>\n";
  o += "<h1>" + h(in.title) + "</h1>\n";
  o += fmt::format("<p class=\"lead\">{} · {} · {} layers · {} parameters</p>\n", h(in.model.value("path", "")),
                   h(in.model.value("arch", "")), in.model.value("layers", 0),
                   human_count(static_cast<double>(in.model.value("params", int64_t{0}))));
  o += "<nav><a href=\"#model\">Model</a><a href=\"#heatmap\">Sensitivity heatmap</a>"
       "<a href=\"#frontier\">Size versus perplexity</a><a href=\"#chosen\">Chosen plan</a><a href=\"#assignment\">"
       "Scheme per component</a><a href=\"#ranking\">Ranking</a><a href=\"#settings\">Settings</a></nav>\n";
  // Headline results (frontier, the paper's table) right after the heatmaps; the detailed
  // tables after them.
  o += section_model(in.model);
  o += section_heatmaps(in.sensitivity);
  o += "<h2 id=\"frontier\">Size versus perplexity</h2>\n";
  bool has_greedy = false;
  for (const auto& r : in.frontier) has_greedy |= r.method == "greedy";
  o += std::string("<p class=\"note\">Every plan evaluated on the evaluation text (held out from calibration). A curve "
                   "joins one method × metric across the budgets (solid: optimal, the least summed damage within the "
                   "budget; dashed: points, the published p01..p10 sweep, the largest point that fits). ") +
       (has_greedy ? "Triangles: greedy (no budget; it lands where its perplexity guard stops it). " : "") +
       "Squares: uniform schemes; diamond: full precision (the dotted line marks its perplexity). Lower and further "
       "left is better; budgets no plan can meet are listed in the table below. Hover a marker for its numbers.</p>\n";
  o += "<div class=\"figure\">\n" + frontier_svg(in.frontier) + "</div>\n";
  o += frontier_table(in.frontier, in.chosen_label);
  o += section_paper_table(in);
  o += section_assignment(in);
  o += section_ranking(in.sensitivity);
  o += "<h2 id=\"settings\">Settings</h2>\n<table>\n";
  for (const auto& [k, v] : in.settings.items()) o += "<tr>" + th(k) + td(json_text(v)) + "</tr>\n";
  o += "</table>\n<p class=\"note\">Written by kllens. The page is self-contained: inline CSS and SVG, no scripts.</p>\n";
  o += "</body>\n</html>\n";
  return o;
}

}  // namespace kllens
