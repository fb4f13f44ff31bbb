"""The fact store: chunking, the packaged embedding model, Chroma collections, ingest and search.

Public entry points: ``retriever.store.FactStore``, ``retriever.models.Document``/``Passage``,
``retriever.loaders.load_path``. Kept import-light: nothing heavy loads until a submodule is used.
"""
