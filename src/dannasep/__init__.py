"""Danna-Sep reproducibility pipeline."""

__version__ = "0.1.0"
