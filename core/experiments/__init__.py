"""Experiments built on runs: benchmark suites, reports (figures), trap diagnostics and ``atesc eval``."""
