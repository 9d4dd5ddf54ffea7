"""Using a trained model for search: an embedding index (faiss + SQLite) and an HTTP service with a web page."""
