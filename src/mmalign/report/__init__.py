"""Reports: one self-contained HTML page (`html.write_report`), inline SVG charts
(`plots.bar_chart`) and a plain-text table (`html.format_table`)."""
