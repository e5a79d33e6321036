"""Generation backends (HF `generate`, vLLM) behind one interface."""
