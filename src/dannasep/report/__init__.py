"""The paper's tables and figures from the pipeline's results (`dannasep report`).

published: the numbers the paper prints; tables: results, blend-weight and model-size tables
and metrics.json; formats: a table as CSV, Markdown, LaTeX and HTML; figures: SDR bars,
per-track distributions, blend simplex, training curves; cli: the `dannasep report
tables|figures` command.
"""
