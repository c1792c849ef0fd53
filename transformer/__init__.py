"""KServe transformer for Commons media moderation: fetch, decode, preprocess, call Triton, format."""
