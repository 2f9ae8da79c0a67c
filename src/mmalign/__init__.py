"""mmalign: align vision-language models with curated and preference data."""

__version__ = "0.1.0"
