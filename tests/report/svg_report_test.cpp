// The SVG builder and the report's charts and page, from small synthetic data (no model).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "report/report.h"
#include "report/svg.h"

namespace kllens {
namespace {

// A strict tag-balance check: every element opened is closed in order, attribute values hold
// no raw '<', and every '&' starts an entity. Good enough to catch unescaped labels and
// unbalanced output (SVG only: no HTML void elements).
bool well_formed(const std::string& xml, std::string* why) {
  std::vector<std::string> stack;
  size_t i = 0;
  while (i < xml.size()) {
    if (xml[i] == '&') {
      static const std::regex entity("^&(amp|lt|gt|quot|#39|#[0-9]+);");
      if (!std::regex_search(xml.substr(i, 8), entity)) {
        *why = "bare & at " + std::to_string(i);
        return false;
      }
      ++i;
      continue;
    }
    if (xml[i] == '>') {
      *why = "stray > at " + std::to_string(i);
      return false;
    }
    if (xml[i] != '<') {
      ++i;
      continue;
    }
    // Find the end of the tag, honouring quoted attribute values.
    size_t j = i + 1;
    bool quoted = false;
    for (; j < xml.size(); ++j) {
      if (xml[j] == '"') quoted = !quoted;
      if (quoted && xml[j] == '<') {
        *why = "raw < in an attribute at " + std::to_string(j);
        return false;
      }
      if (!quoted && xml[j] == '>') break;
    }
    if (j >= xml.size()) {
      *why = "unterminated tag at " + std::to_string(i);
      return false;
    }
    const std::string tag = xml.substr(i + 1, j - i - 1);
    i = j + 1;
    if (tag.empty()) {
      *why = "empty tag";
      return false;
    }
    if (tag.back() == '/') continue;  // self-closing
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) {
        *why = "</" + name + "> closes " + (stack.empty() ? std::string("nothing") : "<" + stack.back() + ">");
        return false;
      }
      stack.pop_back();
      continue;
    }
    stack.push_back(tag.substr(0, tag.find_first_of(" \n\t")));
  }
  if (!stack.empty()) {
    *why = "<" + stack.back() + "> never closed";
    return false;
  }
  return true;
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
  return n;
}

TEST(SvgTest, EscapesMarkupCharacters) {
  EXPECT_EQ(svg::escape_xml("a<b & \"c\" > 'd'"), "a&lt;b &amp; &quot;c&quot; &gt; &#39;d&#39;");
  svg::Svg s(100, 50);
  s.text(10, 20, "x < y & \"z\"");
  s.rect(0, 0, 10, 10, "#fff", "tip <b> & \"q\"");
  s.set_label("label \"<evil>\"");
  const std::string out = s.str();
  std::string why;
  EXPECT_TRUE(well_formed(out, &why)) << why << "\n" << out;
  EXPECT_NE(out.find("x &lt; y &amp; &quot;z&quot;"), std::string::npos) << out;
  EXPECT_NE(out.find("<title>tip &lt;b&gt; &amp; &quot;q&quot;</title>"), std::string::npos) << out;
  EXPECT_EQ(out.find("<evil>"), std::string::npos);
  EXPECT_EQ(out.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
}

TEST(SvgTest, CheckerRejectsMalformedOutput) {
  // The checker must be able to fail, or the tests above prove nothing.
  std::string why;
  EXPECT_FALSE(well_formed("<svg><text>a < b</text></svg>", &why));
  EXPECT_FALSE(well_formed("<svg><g></svg>", &why));
  EXPECT_FALSE(well_formed("<svg><text>a & b</text></svg>", &why));
  EXPECT_FALSE(well_formed("<svg><rect title=\"<\"/></svg>", &why));
  EXPECT_TRUE(well_formed("<svg><g><rect x=\"1\"/></g></svg>", &why)) << why;
}

TEST(SvgTest, GroupsAreClosedAndShapesWritten) {
  svg::Svg s(200, 100);
  s.begin_group("class=\"a\"");
  s.line(0, 0, 10, 10, "#000");
  s.polyline({{0, 0}, {5, 5}, {10, 0}}, "#f00", 2, "4 2");
  for (const char* shape : {"circle", "square", "diamond", "triangle"}) s.marker(shape, 50, 50, 4, "#0f0", shape);
  // The group is left open on purpose: str() closes it.
  const std::string out = s.str();
  std::string why;
  EXPECT_TRUE(well_formed(out, &why)) << why << "\n" << out;
  EXPECT_EQ(count(out, "<polyline"), 1u);
  EXPECT_EQ(count(out, "<polygon"), 2u);
  EXPECT_NE(out.find("stroke-dasharray=\"4 2\""), std::string::npos);
  EXPECT_NE(out.find("points=\"0.00,0.00 5.00,5.00 10.00,0.00\""), std::string::npos);
}

TEST(SvgTest, NumbersAndScales) {
  EXPECT_EQ(svg::format_number(0.5), "0.5");
  EXPECT_EQ(svg::format_number(12), "12");
  EXPECT_EQ(svg::format_number(4.25, 3), "4.25");
  EXPECT_EQ(svg::format_number(1e-5), "1e-05");
  EXPECT_EQ(svg::format_number(0), "0");

  const svg::Scale lin(0, 10, 100, 200);
  EXPECT_DOUBLE_EQ(lin(0), 100);
  EXPECT_DOUBLE_EQ(lin(5), 150);
  EXPECT_DOUBLE_EQ(lin(10), 200);
  const auto t = lin.ticks(5);
  ASSERT_FALSE(t.empty());
  EXPECT_DOUBLE_EQ(t.front(), 0);
  EXPECT_DOUBLE_EQ(t.back(), 10);
  for (size_t i = 1; i < t.size(); ++i) EXPECT_NEAR(t[i] - t[i - 1], 2, 1e-12);

  const svg::Scale lg(1, 1000, 0, 300, true);
  EXPECT_NEAR(lg(10), 100, 1e-9);
  EXPECT_NEAR(lg(100), 200, 1e-9);
  const auto lt = lg.ticks();
  EXPECT_EQ(lt, (std::vector<double>{1, 10, 100, 1000}));

  // Inverted pixel range (SVG y grows down) and a degenerate data range stay finite.
  const svg::Scale inv(2, 2, 300, 0);
  EXPECT_TRUE(std::isfinite(inv(2)));
  EXPECT_GT(inv(1.9), inv(2.1));
  EXPECT_EQ(svg::viridis(0).hex(), "#440154");
  EXPECT_EQ(svg::viridis(1).hex(), "#fde725");
}

// ---- synthetic analysis ----

MeanStd ms(double m, double se = 0) { return {m, se, 10}; }

SweepEntry entry(const std::string& name, int layer, const std::string& role, const std::string& scheme, double kl) {
  SweepEntry e;
  e.component = name;
  e.layer = layer;
  e.role = role;
  e.shape = {64, 32};
  e.params = 64 * 32;
  e.scheme = scheme;
  e.bytes = scheme == "int4:g32" ? 1152 : 2176;
  e.metrics.kl = ms(kl, kl / 10);
  e.metrics.rkl = ms(kl * 1.01);
  e.metrics.mse = ms(kl * 3);
  e.metrics.sqnr_db = ms(-10 * std::log10(kl));
  e.metrics.top1 = ms(0.99);
  e.metrics.dnll = ms(kl / 2);
  return e;
}

SensitivityReport synthetic_sensitivity() {
  SensitivityReport r;
  r.model = {{"path", "/m"}, {"arch", "mamba"}, {"layers", 2}, {"params", 100000}};
  r.schemes = {"int4:g32", "int8:g32"};
  const std::vector<std::string> roles = {"in_proj", "x_proj", "out_proj"};
  double kl = 1e-3;
  for (const std::string scheme : {"int4:g32", "int8:g32"}) {
    r.entries.push_back(entry("embed<&>.weight", -1, "embed", scheme, kl * 20));
    for (int l = 0; l < 2; ++l)
      for (const auto& role : roles) {
        r.entries.push_back(entry(fmt::format("layers.{}.{}.weight", l, role), l, role, scheme, kl));
        kl *= 1.7;
      }
    kl = 1e-6;
  }
  return r;
}

FrontierRow row(const std::string& label, const std::string& method, const std::string& metric,
                std::optional<double> budget, double bits, double ppl) {
  FrontierRow r;
  r.label = label;
  r.method = method;
  r.metric = metric;
  r.budget = budget;
  r.eval.params = 100000;
  r.eval.bits_per_weight = bits;
  r.eval.bytes = static_cast<int64_t>(bits * 100000 / 8);
  r.eval.ppl = ppl;
  r.eval.ppl_fp = 10;
  r.eval.logits.kl_forward = ms(std::log(ppl / 10) + 1e-4, 1e-5);
  r.eval.logits.kl_p99 = 0.1;
  r.eval.logits.top1 = ms(0.95);
  if (method == "uniform") r.point = label.substr(8);
  return r;
}

std::vector<FrontierRow> synthetic_frontier() {
  std::vector<FrontierRow> rows = {row("full precision", "fp", "", std::nullopt, 16, 10),
                                   row("uniform int8:g32", "uniform", "", std::nullopt, 8.5, 10.1),
                                   row("uniform int4:g32", "uniform", "", std::nullopt, 4.6, 14)};
  for (const std::string metric : {"kl", "mse"})
    for (double b : {4.5, 6.0, 8.0}) {
      rows.push_back(row(fmt::format("optimal/{} @{}", metric, b), "optimal", metric, b, b - 0.1,
                         10 + (metric == "kl" ? 1 : 2) * (9 - b) / 2));
      rows.push_back(row(fmt::format("points/{} @{} (p05)", metric, b), "points", metric, b, b - 0.3,
                         10.5 + (9 - b) / 1.5));
    }
  rows.push_back(row("greedy/kl", "greedy", "kl", std::nullopt, 7.1, 10.6));
  FrontierRow infeasible;
  infeasible.label = "optimal/kl @2";
  infeasible.method = "optimal";
  infeasible.metric = "kl";
  infeasible.budget = 2;
  infeasible.feasible = false;
  infeasible.note = "infeasible: the smallest plan is 4.6 bits per weight";
  rows.push_back(infeasible);
  // The chosen row carries a plan.
  for (auto& r : rows)
    if (r.label == "optimal/kl @4.5")
      r.components = {{"embed<&>.weight", "int8:g32"},     {"layers.0.in_proj.weight", "int4:g32"},
                      {"layers.0.x_proj.weight", "bf16"},   {"layers.0.out_proj.weight", "int4:g32"},
                      {"layers.1.in_proj.weight", "int4:g32"}, {"layers.1.x_proj.weight", "int8:g32"},
                      {"layers.1.out_proj.weight", "int4:g32"}};
  return rows;
}

nlohmann::json synthetic_model() {
  nlohmann::json comps = nlohmann::json::array();
  comps.push_back({{"name", "embed<&>.weight"}, {"role", "embed"}, {"layer", -1}, {"shape", {64, 32}}, {"params", 2048}});
  for (int l = 0; l < 2; ++l)
    for (const std::string role : {"in_proj", "x_proj", "out_proj"})
      comps.push_back({{"name", fmt::format("layers.{}.{}.weight", l, role)},
                       {"role", role},
                       {"layer", l},
                       {"shape", {64, 32}},
                       {"params", 2048}});
  return {{"path", "/models/<demo>"},
          {"arch", "mamba"},
          {"layers", 2},
          {"d_model", 32},
          {"vocab", 64},
          {"prefix_tokens", 0},
          {"layer_kinds", {"mamba", "mamba"}},
          {"details", {{"d_state", "16"}}},
          {"params", 100000},
          {"component_params", 14336},
          {"components", comps},
          {"bytes", {{"bf16", 200000}, {"int8_g32", 120000}, {"int4_g32", 90000}}}};
}

TEST(ReportCharts, HeatmapHasOneCellPerEntryWithTooltips) {
  const auto sens = synthetic_sensitivity();
  const auto [lo, hi] = heatmap_log_range(sens.entries);
  EXPECT_NEAR(lo, -6, 1e-9);  // the smallest int8 KL
  EXPECT_GT(hi, lo + 1);
  const std::string s = heatmap_svg(sens.entries, "int4:g32", lo, hi);
  std::string why;
  ASSERT_TRUE(well_formed(s, &why)) << why << "\n" << s;
  EXPECT_EQ(count(s, "<title>"), 7u) << "one tooltip per component of the scheme";
  EXPECT_NE(s.find("embed&lt;&amp;&gt;.weight"), std::string::npos) << "names are escaped";
  for (const char* label : {">model<", ">L0<", ">L1<", ">in_proj<", ">x_proj<", ">out_proj<"})
    EXPECT_NE(s.find(label), std::string::npos) << label;
  // Distinct KLs give distinct colours; the most damaging entry is the brightest (viridis top).
  std::set<std::string> fills;
  const std::regex fill("<rect [^>]*fill=\"(#[0-9a-f]{6})\"[^>]*><title>");
  for (auto it = std::sregex_iterator(s.begin(), s.end(), fill); it != std::sregex_iterator(); ++it)
    fills.insert((*it)[1]);
  EXPECT_EQ(fills.size(), 7u);
  const std::string other = heatmap_svg(sens.entries, "int8:g32", lo, hi);
  EXPECT_TRUE(well_formed(other, &why)) << why;
  EXPECT_NE(s, other);
  EXPECT_NE(heatmap_svg(sens.entries, "q4_0", lo, hi).find("no entries"), std::string::npos);
}

TEST(ReportCharts, FrontierPlotHasCurvesPointsAndLegend) {
  const auto rows = synthetic_frontier();
  const std::string s = frontier_svg(rows);
  std::string why;
  ASSERT_TRUE(well_formed(s, &why)) << why << "\n" << s;
  EXPECT_EQ(count(s, "<polyline"), 4u) << "optimal/points x kl/mse";
  for (const char* text : {"optimal / kl", "points / mse", "greedy / kl", "full precision", "int8:g32", "int4:g32",
                           "bits per weight", "perplexity"})
    EXPECT_NE(s.find(text), std::string::npos) << text;
  EXPECT_EQ(s.find("optimal/kl @2"), std::string::npos) << "infeasible rows are not drawn";
  // Every feasible row is one marker with a tooltip.
  EXPECT_EQ(count(s, "<title>"), rows.size() - 1);
  EXPECT_NE(frontier_svg({}).find("no evaluated"), std::string::npos);
}

TEST(ReportCharts, PlanGridColoursBySchemeWithLegend) {
  const auto rows = synthetic_frontier();
  const FrontierRow* chosen = nullptr;
  for (const auto& r : rows)
    if (r.label == "optimal/kl @4.5") chosen = &r;
  ASSERT_NE(chosen, nullptr);
  const std::string s = plan_grid_svg(chosen->components, synthetic_model());
  std::string why;
  ASSERT_TRUE(well_formed(s, &why)) << why << "\n" << s;
  EXPECT_EQ(count(s, "<title>"), 7u);
  EXPECT_NE(s.find("bf16 (kept)"), std::string::npos);
  EXPECT_EQ(count(s, ">int4:g32</text>"), 4u + 1u) << "four cells and the legend";
}

TEST(ReportPage, SelfContainedWithEverySection) {
  ReportInputs in;
  in.title = "analysis of <demo> & co";
  in.model = synthetic_model();
  in.sensitivity = synthetic_sensitivity();
  in.frontier = synthetic_frontier();
  in.chosen_label = "optimal/kl @4.5";
  in.budget = 4.5;
  in.settings = {{"calibration text", "a \"quoted\" <file>"}, {"windows", 4}};
  const std::string html = render_report_html(in);
  for (const char* heading : {">Model</h2>", ">Sensitivity heatmap</h2>", ">Ranking</h2>",
                              ">Size versus perplexity</h2>", ">Chosen plan versus uniform INT8 / INT4 and full precision</h2>",
                              ">Scheme per component</h2>", ">Settings</h2>"})
    EXPECT_NE(html.find(heading), std::string::npos) << heading;
  EXPECT_EQ(count(html, "<svg"), 2u + 1u + 1u) << "two heatmaps, the frontier, the plan grid";
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("<demo>"), std::string::npos) << "title and path are escaped";
  EXPECT_NE(html.find("analysis of &lt;demo&gt; &amp; co"), std::string::npos);
  EXPECT_NE(html.find("a &quot;quoted&quot; &lt;file&gt;"), std::string::npos);
  // The only URL is the SVG namespace.
  const std::regex url("[a-z]+://[^\"]*");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), url); it != std::sregex_iterator(); ++it)
    EXPECT_EQ(it->str(), "http://www.w3.org/2000/svg");
  // The paper's table: full precision, the uniform rows, the chosen plan (highlighted), the
  // points row at the same budget and greedy.
  const size_t table = html.find("id=\"chosen\"");
  ASSERT_NE(table, std::string::npos);
  const std::string part = html.substr(table, html.find("id=\"assignment\"") - table);
  for (const char* label : {"full precision", "uniform int8:g32", "uniform int4:g32", "optimal/kl @4.5",
                            "points/kl @4.5 (p05)", "greedy/kl"})
    EXPECT_NE(part.find(std::string(">") + label + "<"), std::string::npos) << label;
  EXPECT_EQ(part.find("points/kl @6"), std::string::npos) << "only the chosen budget";
  EXPECT_NE(part.find("class=\"chosen\""), std::string::npos);
  // Role ranking lists the most sensitive int4 role first (out_proj has the largest KLs).
  const size_t roles = html.find("Roles ranked");
  ASSERT_NE(roles, std::string::npos);
  EXPECT_LT(html.find("<td>out_proj</td>", roles), html.find("<td>in_proj</td>", roles));
}

}  // namespace
}  // namespace kllens
