"""Separation: chunking and cross-fade, model inference per chunk, the file front end, the CLI."""
