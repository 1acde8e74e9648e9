"""Evaluation: the exact fast SDR (sdr), museval JSON and aggregation (scores), reading
references and estimates (references), the CLI."""
