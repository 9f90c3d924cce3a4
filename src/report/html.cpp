#include "report/html.h"

#include <cctype>

#include <fmt/format.h>

#include "report/svg_chart.h"

namespace pgolf::report {

namespace {

constexpr const char* kCss = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1260px;padding:12px 20px;color:#222;background:#f6f7f9}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:0 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
section{overflow-x:auto;background:#fff;border:1px solid #e2e4e8;border-radius:6px;padding:12px 14px;margin:12px 0}
table{border-collapse:collapse;font-size:13px;margin:4px 0}td,th{border:1px solid #e2e4e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f7f9;border:1px solid #e2e4e8;padding:8px;font-size:12px;overflow:auto;max-height:420px;white-space:pre-wrap}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid svg{border:1px solid #e2e4e8;border-radius:4px}
.note{color:#666;font-size:13px;margin:4px 0}.warn{background:#fff4e5;border:1px solid #f0c27b;padding:6px 10px;border-radius:4px;font-size:13px}
nav a{margin-right:10px;font-size:13px}
svg text{font-family:system-ui,sans-serif;fill:#333}svg .ttl{font-size:13px;font-weight:600}svg .tk{font-size:11px;fill:#555}
svg .ax{font-size:12px}svg .lg{font-size:11px}svg .bv{font-size:10px;fill:#444}svg .nd{font-size:13px;fill:#999}
svg .grid{stroke:#eceef1;stroke-width:1}
)";

}  // namespace

std::string html_page(const std::string& title, const std::string& body_html) {
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>{}</title><style>{}</style></head>\n<body>\n{}\n</body></html>\n",
      escape_xml(title), kCss, body_html);
}

std::string html_section(const std::string& id, const std::string& title, const std::string& body_html) {
  return fmt::format("<section id=\"{}\"><h2>{}</h2>\n{}</section>\n", escape_xml(id), escape_xml(title), body_html);
}

std::string html_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::string out = "<table><tr>";
  for (const auto& h : header) out += "<th>" + escape_xml(h) + "</th>";
  out += "</tr>\n";
  for (const auto& r : rows) {
    out += "<tr>";
    for (const auto& cell : r) {
      // Right-align numbers so columns of values line up.
      const bool numeric = !cell.empty() && (std::isdigit(static_cast<unsigned char>(cell[0])) ||
                                             (cell[0] == '-' && cell.size() > 1 && std::isdigit(static_cast<unsigned char>(cell[1]))));
      out += numeric ? "<td class=\"num\">" : "<td>";
      out += escape_xml(cell) + "</td>";
    }
    out += "</tr>\n";
  }
  return out + "</table>\n";
}

std::string html_kv_table(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::vector<std::vector<std::string>> r;
  for (const auto& [k, v] : rows) r.push_back({k, v});
  return html_table({"field", "value"}, r);
}

std::string html_pre(const std::string& text) { return "<pre>" + escape_xml(text) + "</pre>\n"; }

std::string html_note(const std::string& text) { return "<p class=\"note\">" + escape_xml(text) + "</p>\n"; }

std::string html_warnings(const std::vector<std::string>& warnings) {
  if (warnings.empty()) return {};
  std::string out = "<div class=\"warn\"><b>Notes on the input:</b><ul>";
  for (const auto& w : warnings) out += "<li>" + escape_xml(w) + "</li>";
  return out + "</ul></div>\n";
}

std::string html_chart_grid(const std::vector<std::string>& svgs) {
  std::string out = "<div class=\"grid\">\n";
  bool any = false;
  for (const auto& s : svgs)
    if (!s.empty()) {
      out += s + "\n";
      any = true;
    }
  return any ? out + "</div>\n" : std::string();
}

}  // namespace pgolf::report
