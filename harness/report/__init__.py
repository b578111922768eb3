"""Reliability reports: results.json, summary.md, junit.xml and a self-contained report.html."""
