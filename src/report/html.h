#pragma once
// HTML building blocks for the report: a page with inline CSS and a content security policy that
// forbids scripts and network loads, sections, tables and chart grids. Every function that takes
// plain text escapes it; arguments named *_html are trusted markup built by these functions.
#include <string>
#include <utility>
#include <vector>

namespace pgolf::report {

std::string html_page(const std::string& title, const std::string& body_html);
std::string html_section(const std::string& id, const std::string& title, const std::string& body_html);
std::string html_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
std::string html_kv_table(const std::vector<std::pair<std::string, std::string>>& rows);
std::string html_pre(const std::string& text);
std::string html_note(const std::string& text);  // a muted paragraph
std::string html_warnings(const std::vector<std::string>& warnings);
// Charts side by side (wrapping); empty strings are skipped.
std::string html_chart_grid(const std::vector<std::string>& svgs);

}  // namespace pgolf::report
