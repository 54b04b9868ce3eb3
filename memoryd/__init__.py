"""memoryd: a local memory database for agent experiments.

Conversation folders and their hierarchical summaries go into PostgreSQL +
pgvector, embedded offline and searchable by meaning.  The package is split
into one module per stage (config, db, parse, summaries, store, embed, search,
sync, watch, daemon, cli); ``sync`` is the only place where the ingest stages meet.
"""

__version__ = "0.1.0"
