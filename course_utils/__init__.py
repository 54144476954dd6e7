"""Inside the Transformer: helpers that the course notebooks build once and reuse.

The modules mirror the notebooks (see README): ``tokenization``, ``embeddings``,
``positional``, ``attention``, ``masks``, ``blocks``, ``models``, ``viz``, ``profiling``,
``analysis``, ``rag``, ``bench``, ``training``, ``exercises`` and ``repro``.
"""

__version__ = "0.1.0"
