"""The sparse-training core: plain torch, no CLI, Ray or DuckDB imports."""
