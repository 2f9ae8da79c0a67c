"""Generation and judging backends (hf, openai, oracle) behind small protocols."""
