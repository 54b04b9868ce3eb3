"""memoryd: a local memory database for agent experiments.

Conversation folders and their hierarchical summaries go into PostgreSQL +
pgvector, embedded offline and searchable by meaning.  Ask it through
:class:`Memory`::

    import memoryd

    with memoryd.Memory.open() as mem:
        for hit in mem.search("what did we decide about the schema?", k=5):
            print(hit.slug, hit.seq, hit.text, hit.context.summaries)

What is listed in ``__all__`` is the public surface; every other module is
free to change.  Importing the package loads neither the database driver nor
the model: they load on first use.
"""

__version__ = "0.2.0"  # before the imports: modules below read it

from memoryd.api import Memory, SearchRequest
from memoryd.errors import DatabaseUnavailable, InvalidRequest, MemorydError, NotFound, ServiceError
from memoryd.results import Context, ConversationInfo, ConversationView, Hit, SummaryRef, Turn

__all__ = [
    "Context",
    "ConversationInfo",
    "ConversationView",
    "DatabaseUnavailable",
    "Hit",
    "InvalidRequest",
    "Memory",
    "MemorydError",
    "NotFound",
    "SearchRequest",
    "ServiceError",
    "SummaryRef",
    "Turn",
    "__version__",
]
