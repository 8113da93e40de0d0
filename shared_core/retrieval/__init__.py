"""Retrieval: chunking, embeddings, the dense index, fusion of hit lists."""
