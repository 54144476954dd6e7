"""Inside the Transformer: helpers that the course notebooks build once and reuse.

One module per concept (the notebooks that use it in brackets):

- ``tokenization``: byte-level BPE from scratch; real tokenizers rebuilt from their files (01)
- ``embeddings``: lookups, pooling, similarity, contextual word vectors (02, 09)
- ``positional``: sinusoidal encodings and RoPE, both layouts (03, 05)
- ``attention``: softmax(QKᵀ/√d)V, multi-head and grouped-query attention (04, 05)
- ``masks``: causal, padding, sliding-window masks; True = may attend (06)
- ``weights``: real attention weights copied into the scratch modules (05, 06)
- ``blocks``: a whole transformer in nanoGPT's style (07, 12)
- ``measurement``: one stopwatch, one matmul-peak yardstick, FLOP counts (07, 10, bench)
- ``profiling``: where a forward pass spends its time (07)
- ``kv_cache``: the KV cache, its bytes and a decode step's cost (05, 08, 10)
- ``generation``: greedy decoding by hand, a one-page Llama forward (08, 08b)
- ``decoding``: temperature, top-k/p, min-p, repetition penalty, beam search (08b, 12)
- ``seq2seq``: the character-level T5 trained live (08)
- ``vision``: a ViT patch embedding (08)
- ``rag``: retrieval, reranking, grounding and attribution (09)
- ``bench``: the attention variants whose cost 10 measures
- ``flash_attention``: FlashAttention-style tiled attention from scratch (10, bench)
- ``analysis``: what heads do, ablations, induction scores (04, 05, 11, 12)
- ``training``: the one training loop and learning-rate schedule (08, 12)
- ``viz``: the figure style, heatmaps, widgets, offline bertviz views (all)
- ``models``: the offline model zoo, verified by SHA-256 (all)
- ``params``: one clear error for every bad notebook parameter (all)
- ``repro``: seeds, thread counts, the device (all)
- ``paths``: where the data files are, in a checkout or an installed wheel (09)
- ``assets``, ``prepare``: pinned offline JavaScript and model preparation (set-up)
- ``exercises``, ``solutions``: the checkers and the reference solutions
"""

__version__ = "0.1.0"
