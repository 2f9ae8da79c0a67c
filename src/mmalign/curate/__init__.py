"""Align2LLaVA curation: annotations -> reward models -> scores -> cascade selection -> rewrite."""
