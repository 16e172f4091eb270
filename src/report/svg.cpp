#include "report/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace kllens::svg {

std::string escape_xml(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_number(double v, int significant) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e-3 && a < 1e6) {
    // Fixed notation with `significant` digits, trailing zeros trimmed.
    const int decimals = std::max(0, significant - 1 - static_cast<int>(std::floor(std::log10(a))));
    std::string s = fmt::format("{:.{}f}", v, decimals);
    if (s.find('.') != std::string::npos) {
      while (!s.empty() && s.back() == '0') s.pop_back();
      if (!s.empty() && s.back() == '.') s.pop_back();
    }
    return s;
  }
  return fmt::format("{:.{}g}", v, significant);
}

std::string Rgb::hex() const {
  auto c = [](double x) { return static_cast<int>(std::lround(std::clamp(x, 0.0, 1.0) * 255)); };
  return fmt::format("#{:02x}{:02x}{:02x}", c(r), c(g), c(b));
}

Rgb viridis(double t) {
  if (std::isnan(t)) return {0.75, 0.75, 0.75};
  // matplotlib's viridis at t = 0, 1/8, ..., 1.
  static constexpr std::array<std::array<double, 3>, 9> k = {{{0.267, 0.005, 0.329},
                                                               {0.279, 0.175, 0.483},
                                                               {0.230, 0.322, 0.546},
                                                               {0.173, 0.449, 0.558},
                                                               {0.128, 0.567, 0.551},
                                                               {0.153, 0.680, 0.504},
                                                               {0.369, 0.789, 0.383},
                                                               {0.678, 0.864, 0.190},
                                                               {0.993, 0.906, 0.144}}};
  t = std::clamp(t, 0.0, 1.0) * 8;
  const size_t i = std::min<size_t>(7, static_cast<size_t>(t));
  const double f = t - static_cast<double>(i);
  return {k[i][0] + f * (k[i + 1][0] - k[i][0]), k[i][1] + f * (k[i + 1][1] - k[i][1]),
          k[i][2] + f * (k[i + 1][2] - k[i][2])};
}

std::string series_color(size_t i) {
  // Tableau 10: distinguishable, and legible on white.
  static const std::array<const char*, 10> p = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                                "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  return p[i % p.size()];
}

// ---- Scale ----

Scale::Scale(double lo, double hi, double p0, double p1, bool log)
    : lo_(lo), hi_(hi), p0_(p0), p1_(p1), log_(log) {
  if (!std::isfinite(lo_) || !std::isfinite(hi_)) lo_ = log_ ? 1 : 0, hi_ = log_ ? 10 : 1;
  if (hi_ < lo_) std::swap(lo_, hi_);
  if (log_ && lo_ <= 0) {
    lo_ = hi_ > 0 ? hi_ / 10 : 1;
    if (hi_ <= 0) hi_ = 10;
  }
  if (hi_ == lo_) {
    if (log_) {
      lo_ /= 1.5, hi_ *= 1.5;
    } else {
      const double d = lo_ == 0 ? 1 : std::fabs(lo_) * 0.1;
      lo_ -= d, hi_ += d;
    }
  }
}

double Scale::operator()(double v) const {
  double f;
  if (log_) {
    f = (std::log10(std::max(v, 1e-300)) - std::log10(lo_)) / (std::log10(hi_) - std::log10(lo_));
  } else {
    f = (v - lo_) / (hi_ - lo_);
  }
  return p0_ + f * (p1_ - p0_);
}

namespace {
double nice_step(double range, int target) {
  const double raw = range / std::max(1, target);
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  const double r = raw / mag;
  const double m = r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10;
  return m * mag;
}
}  // namespace

std::vector<double> Scale::ticks(int target) const {
  std::vector<double> out;
  const double eps = 1e-9;
  if (log_) {
    const int d0 = static_cast<int>(std::floor(std::log10(lo_) + eps));
    const int d1 = static_cast<int>(std::ceil(std::log10(hi_) - eps));
    const bool fine = d1 - d0 <= 2;
    for (int d = d0; d <= d1; ++d) {
      for (double m : fine ? std::vector<double>{1, 2, 5} : std::vector<double>{1}) {
        const double v = m * std::pow(10, d);
        if (v >= lo_ * (1 - eps) && v <= hi_ * (1 + eps)) out.push_back(v);
      }
    }
    if (out.size() < 2 && fine) {
      // A narrow range inside one decade: fall back to linear steps, which still read correctly.
      out.clear();
      const double step = nice_step(hi_ - lo_, target);
      for (double v = std::ceil(lo_ / step - eps) * step; v <= hi_ + step * eps; v += step)
        out.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }
  const double step = nice_step(hi_ - lo_, target);
  for (double v = std::ceil(lo_ / step - eps) * step; v <= hi_ + step * eps; v += step)
    out.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return out;
}

Scale Scale::nice(int target) const {
  if (log_) {
    // Pad by 5% of the log range; decade rounding would waste most of a narrow plot.
    const double a = std::log10(lo_), b = std::log10(hi_), pad = std::max(0.02, 0.05 * (b - a));
    return Scale(std::pow(10, a - pad), std::pow(10, b + pad), p0_, p1_, true);
  }
  const double step = nice_step(hi_ - lo_, target);
  return Scale(std::floor(lo_ / step) * step, std::ceil(hi_ / step) * step, p0_, p1_, false);
}

// ---- Svg ----

Svg::Svg(double width, double height) : width_(width), height_(height) {}

namespace {
std::string num(double v) { return fmt::format("{:.2f}", v); }
std::string title_child(std::string_view tooltip) {
  return tooltip.empty() ? std::string() : "<title>" + escape_xml(tooltip) + "</title>";
}
}  // namespace

void Svg::rect(double x, double y, double w, double h, std::string_view fill, std::string_view tooltip,
               std::string_view stroke, double stroke_width) {
  std::string s = fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"", num(x),
                              num(y), num(std::max(0.0, w)), num(std::max(0.0, h)), escape_xml(fill));
  if (!stroke.empty())
    s += fmt::format(" stroke=\"{}\" stroke-width=\"{}\"", escape_xml(stroke), num(stroke_width));
  body_ += tooltip.empty() ? s + "/>\n" : s + ">" + title_child(tooltip) + "</rect>\n";
}

void Svg::line(double x1, double y1, double x2, double y2, std::string_view stroke, double width,
               std::string_view dash) {
  body_ += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{}/>\n",
                       num(x1), num(y1), num(x2), num(y2), escape_xml(stroke), num(width),
                       dash.empty() ? "" : fmt::format(" stroke-dasharray=\"{}\"", escape_xml(dash)));
}

void Svg::polyline(const std::vector<std::pair<double, double>>& points, std::string_view stroke,
                   double width, std::string_view dash) {
  if (points.empty()) return;
  std::string pts;
  for (const auto& [x, y] : points) pts += (pts.empty() ? "" : " ") + num(x) + "," + num(y);
  body_ += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{}/>\n", pts,
                       escape_xml(stroke), num(width),
                       dash.empty() ? "" : fmt::format(" stroke-dasharray=\"{}\"", escape_xml(dash)));
}

void Svg::circle(double cx, double cy, double r, std::string_view fill, std::string_view tooltip,
                 std::string_view stroke) {
  std::string s = fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{}\"", num(cx), num(cy), num(r),
                              escape_xml(fill));
  if (!stroke.empty()) s += fmt::format(" stroke=\"{}\"", escape_xml(stroke));
  body_ += tooltip.empty() ? s + "/>\n" : s + ">" + title_child(tooltip) + "</circle>\n";
}

void Svg::marker(std::string_view shape, double cx, double cy, double r, std::string_view fill,
                 std::string_view tooltip) {
  if (shape == "square") {
    rect(cx - r, cy - r, 2 * r, 2 * r, fill, tooltip, "#222", 0.8);
    return;
  }
  if (shape == "diamond" || shape == "triangle") {
    std::string pts;
    if (shape == "diamond") {
      pts = fmt::format("{},{} {},{} {},{} {},{}", num(cx), num(cy - 1.3 * r), num(cx + 1.3 * r), num(cy),
                        num(cx), num(cy + 1.3 * r), num(cx - 1.3 * r), num(cy));
    } else {
      pts = fmt::format("{},{} {},{} {},{}", num(cx), num(cy - 1.3 * r), num(cx + 1.2 * r), num(cy + r),
                        num(cx - 1.2 * r), num(cy + r));
    }
    const std::string s = fmt::format("<polygon points=\"{}\" fill=\"{}\" stroke=\"#222\" stroke-width=\"0.8\"",
                                      pts, escape_xml(fill));
    body_ += tooltip.empty() ? s + "/>\n" : s + ">" + title_child(tooltip) + "</polygon>\n";
    return;
  }
  circle(cx, cy, r, fill, tooltip, "#222");
}

void Svg::text(double x, double y, std::string_view content, const TextStyle& style) {
  std::string attrs = fmt::format("x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"{}\" fill=\"{}\"", num(x),
                                  num(y), num(style.size), escape_xml(style.anchor), escape_xml(style.fill));
  if (style.weight != "normal") attrs += fmt::format(" font-weight=\"{}\"", escape_xml(style.weight));
  if (!style.baseline.empty()) attrs += fmt::format(" dominant-baseline=\"{}\"", escape_xml(style.baseline));
  if (style.rotate != 0)
    attrs += fmt::format(" transform=\"rotate({} {} {})\"", num(style.rotate), num(x), num(y));
  body_ += "<text " + attrs + ">" + escape_xml(content) + "</text>\n";
}

void Svg::begin_group(std::string_view attributes) {
  body_ += attributes.empty() ? std::string("<g>\n") : "<g " + std::string(attributes) + ">\n";
  ++open_groups_;
}

void Svg::end_group() {
  if (open_groups_ == 0) return;
  body_ += "</g>\n";
  --open_groups_;
}

std::string Svg::str() const {
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"Helvetica, Arial, sans-serif\"",
      num(width_), num(height_), num(width_), num(height_));
  if (!label_.empty()) out += fmt::format(" role=\"img\" aria-label=\"{}\"", escape_xml(label_));
  out += ">\n" + body_;
  for (int i = 0; i < open_groups_; ++i) out += "</g>\n";
  out += "</svg>\n";
  return out;
}

// ---- axes and legend ----

void draw_axes(Svg& svg, const Axes& a, std::string_view x_title, std::string_view y_title, int x_ticks,
               int y_ticks) {
  svg.rect(a.left, a.top, a.right - a.left, a.bottom - a.top, "#ffffff", {}, "#888", 1);
  TextStyle tick;
  tick.size = 11;
  tick.fill = "#333";
  for (double v : a.x.ticks(x_ticks)) {
    const double px = a.x(v);
    svg.line(px, a.top, px, a.bottom, "#e6e6e6", 1);
    svg.line(px, a.bottom, px, a.bottom + 5, "#555", 1);
    tick.anchor = "middle";
    svg.text(px, a.bottom + 18, format_number(v), tick);
  }
  for (double v : a.y.ticks(y_ticks)) {
    const double py = a.y(v);
    svg.line(a.left, py, a.right, py, "#e6e6e6", 1);
    svg.line(a.left - 5, py, a.left, py, "#555", 1);
    tick.anchor = "end";
    tick.baseline = "middle";
    svg.text(a.left - 8, py, format_number(v), tick);
    tick.baseline.clear();
  }
  svg.rect(a.left, a.top, a.right - a.left, a.bottom - a.top, "none", {}, "#555", 1);
  TextStyle title;
  title.size = 13;
  title.anchor = "middle";
  svg.text((a.left + a.right) / 2, a.bottom + 40, x_title, title);
  title.rotate = -90;
  svg.text(a.left - 52, (a.top + a.bottom) / 2, y_title, title);
}

double draw_legend(Svg& svg, double x, double y, const std::vector<LegendItem>& items) {
  if (items.empty()) return 0;
  const double row = 18;
  size_t longest = 0;
  for (const auto& it : items) longest = std::max(longest, it.label.size());
  const double w = 40 + 6.6 * static_cast<double>(longest);
  const double h = 10 + row * static_cast<double>(items.size());
  svg.rect(x, y, w, h, "#ffffff", {}, "#aaa", 1);
  TextStyle t;
  t.size = 11.5;
  t.baseline = "middle";
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    const double cy = y + 5 + row * (static_cast<double>(i) + 0.5);
    if (it.shape == "line") {
      svg.line(x + 8, cy, x + 30, cy, it.color, 2, it.dash);
      svg.marker("circle", x + 19, cy, 3, it.color);
    } else {
      svg.marker(it.shape, x + 19, cy, 4.5, it.color);
    }
    svg.text(x + 36, cy, it.label, t);
  }
  return h;
}

}  // namespace kllens::svg
