"""Verification: a converted folder checked against its checkpoint: its tensors, settings and tokenizer, and
both models run on the same inputs."""
