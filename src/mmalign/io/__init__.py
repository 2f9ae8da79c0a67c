"""Readers, writers and safe file handling."""
