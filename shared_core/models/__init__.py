"""The model layer: loading causal LMs, their chat format, decoding, the local generator."""
