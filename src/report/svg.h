// A small SVG builder for the analysis report: every plot in report.html is drawn here, as text,
// so the report needs no scripts, fonts or network. Coordinates are SVG user units (pixels);
// every string that reaches the output passes through escape_xml.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kllens::svg {

// Escapes & < > " ' for use in XML text and attribute values.
std::string escape_xml(std::string_view text);

// Shortest readable form of a number for tick labels and tooltips ("0.5", "12", "1e-05").
std::string format_number(double v, int significant = 3);

// A colour as "#rrggbb".
struct Rgb {
  double r = 0, g = 0, b = 0;  // 0..1
  std::string hex() const;
};
// A perceptually ordered ramp (viridis, sampled): t in [0, 1], clamped; NaN gives grey.
Rgb viridis(double t);
// A fixed palette of distinguishable colours for series; cycles.
std::string series_color(size_t i);

// A linear or log10 mapping from data values to pixels, with "nice" ticks.
class Scale {
 public:
  Scale() = default;
  // [lo, hi] data range onto [p0, p1] pixels (p1 < p0 is fine: SVG y grows downwards). A log
  // scale needs lo > 0. A degenerate range is widened so that mapping stays finite.
  Scale(double lo, double hi, double p0, double p1, bool log = false);
  double operator()(double v) const;
  double lo() const { return lo_; }
  double hi() const { return hi_; }
  bool is_log() const { return log_; }
  // Tick values inside [lo, hi]: 1/2/5 x 10^k steps (linear, about `target` of them) or, for
  // log scales, decades (with 2 and 5 when the range spans under three decades).
  std::vector<double> ticks(int target = 6) const;
  // Widens [lo, hi] outward to tick values (or a decade fraction for log): tidy axes.
  Scale nice(int target = 6) const;

 private:
  double lo_ = 0, hi_ = 1, p0_ = 0, p1_ = 1;
  bool log_ = false;
};

struct TextStyle {
  double size = 12;
  std::string anchor = "start";  // start | middle | end
  std::string fill = "#222";
  std::string weight = "normal";
  double rotate = 0;             // degrees, about (x, y)
  std::string baseline;          // dominant-baseline: "" (alphabetic), "middle", "hanging"
};

// Builds one <svg> element. Shapes may carry a tooltip (an SVG <title> child, which browsers
// show on hover without scripts).
class Svg {
 public:
  Svg(double width, double height);
  double width() const { return width_; }
  double height() const { return height_; }

  void rect(double x, double y, double w, double h, std::string_view fill,
            std::string_view tooltip = {}, std::string_view stroke = {}, double stroke_width = 0);
  void line(double x1, double y1, double x2, double y2, std::string_view stroke, double width = 1,
            std::string_view dash = {});
  void polyline(const std::vector<std::pair<double, double>>& points, std::string_view stroke,
                double width = 1.5, std::string_view dash = {});
  void circle(double cx, double cy, double r, std::string_view fill, std::string_view tooltip = {},
              std::string_view stroke = {});
  // A marker of a few shapes ("circle", "square", "diamond", "triangle") for scatter points.
  void marker(std::string_view shape, double cx, double cy, double r, std::string_view fill,
              std::string_view tooltip = {});
  void text(double x, double y, std::string_view content, const TextStyle& style = {});
  void begin_group(std::string_view attributes = {});  // raw attributes, e.g. class="heat"
  void end_group();
  // aria-label for the whole figure (screen readers; also what tests look for).
  void set_label(std::string label) { label_ = std::move(label); }

  std::string str() const;

 private:
  double width_, height_;
  std::string label_;
  std::string body_;
  int open_groups_ = 0;
};

// Axes for a plot area: the frame, ticks, tick labels, grid lines and axis titles.
struct Axes {
  double left, top, right, bottom;  // the plot area in pixels
  Scale x, y;
};
void draw_axes(Svg& svg, const Axes& axes, std::string_view x_title, std::string_view y_title,
               int x_ticks = 8, int y_ticks = 6);

// One legend entry: colour, marker shape ("line" for a line sample) and label.
struct LegendItem {
  std::string color, shape, label;
  std::string dash;
};
// Draws a legend box at (x, y), one entry per row; returns its height.
double draw_legend(Svg& svg, double x, double y, const std::vector<LegendItem>& items);

}  // namespace kllens::svg
