"""Preference pairs: hallucination injection, image noise, pairs from ratings."""
