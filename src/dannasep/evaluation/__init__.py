"""Evaluation: the exact fast SDR (sdr), the full BSS Eval v4 as museval computes it (bss_eval,
its distortion filters in bss_filters), museval JSON and aggregation (scores), reading
references and estimates (references), the CLI."""
