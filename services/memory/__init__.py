"""Long-term memory: facts and episodes from past turns, found again by meaning.

- items.py: what is remembered (MemoryItem), where (its scope), and a search hit;
- embedder.py: sentences to vectors (all-MiniLM-L6-v2 from a package, run with onnxruntime);
- store.py: the interface a store implements; sqlite_store.py (the embedded default, one
  machine) and redis_store.py (shared by many machines);
- long_term.py: remember and recall in words (embedding included), backups and resets.
"""
