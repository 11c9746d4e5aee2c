"""Classic knowledge distillation on real data (``freekd distill``): config, pipeline, CLI."""
