"""Images -> embeddings: image tables, decoding, the embedding cache, open_clip encoding and
class prompts."""
