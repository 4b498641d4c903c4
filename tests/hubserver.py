"""Fixtures for a real HF-compatible server on localhost (olah, offline mode). Filled by the downloads work."""
