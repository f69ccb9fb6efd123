"""Command-line tools: inspecting configs and batches, config docs, the benchmark, SmolLM2 weights."""
