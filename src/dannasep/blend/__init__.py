"""Blend: the exact weight search over per-window statistics (search), weights files and
applying them (weights), the CLI."""
