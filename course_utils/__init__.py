"""Inside the Transformer: helpers that the course notebooks build once and reuse.

One module per concept (the notebooks that import it in brackets; CONTRIBUTING.md has the
concept -> module -> notebooks table):

- ``tokenization``: byte-level BPE from scratch, WordPiece; real tokenizers rebuilt from their files (01)
- ``embeddings``: lookups, pooling, sentence embeddings, similarity, contextual word vectors (02, 03, 11)
- ``positional``: sinusoidal encodings, RoPE (both layouts), ALiBi, T5 buckets (02, 03, 05)
- ``attention``: softmax(QKᵀ/√d)V, multi-head and grouped-query attention, their stages (04, 05, 06, 10)
- ``masks``: causal, padding, sliding-window, prefix-LM, packed masks; True = may attend (05, 06, 10)
- ``families``: one view of a pretrained model whatever its family (02–07, 11; through
  ``analysis`` and ``weights`` too)
- ``weights``: real weights copied into the course's own modules (03, 04, 05, 06)
- ``blocks``: the transformer family in nanoGPT's style: Block, Transformer, CausalLM (07, 12)
- ``measurement``: one stopwatch, one matmul-peak yardstick, FLOP counts (07, 10, bench)
- ``profiling``: where a forward pass spends its time (07)
- ``kv_cache``: the KV cache, its bytes and a decode step's cost (05, 08, 10)
- ``generation``: greedy decoding by hand, a one-page Llama forward (08)
- ``decoding``: temperature, top-k/p, min-p, repetition penalty, beam search (08b, 12)
- ``seq2seq``: the character-level T5 trained live (08)
- ``vision``: a ViT patch embedding (08)
- ``rag``: retrieval, reranking, grounding and attribution (09)
- ``bench``: the attention variants whose cost 10 measures (10)
- ``flash_attention``: FlashAttention-style tiled attention from scratch (10, bench)
- ``analysis``: what heads do, ablations, induction scores, the attention-only toy model (04, 05, 11, 12)
- ``interp``: logit lens, activation patching, direct logit attribution, circuits (14)
- ``training``: the one training loop and learning-rate schedule (08, 12)
- ``learner``: the learner's workspace, ``%%exercise PIECE`` (01, 03–08, 13)
- ``viz``: the figure style, heatmaps, widgets, offline bertviz views (all)
- ``models``: the offline model zoo, verified by SHA-256 (all but 12)
- ``params``: one clear error for every bad notebook parameter (all)
- ``repro``: seeds, thread counts, the device (all)
- ``paths``: where the data files are, in a checkout or an installed wheel (09, through rag)
- ``prepare``: model preparation for ``task setup`` (the pinned offline JavaScript is
  build infrastructure: ``tools/assets.py``)
- ``exercises``, ``solutions``: the checkers and the reference solutions
"""

__version__ = "0.1.0"
