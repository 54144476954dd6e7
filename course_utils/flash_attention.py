"""Used in notebook 10 and by ``task bench``: FlashAttention-style tiled attention, from scratch.

Exact attention that never builds the n × n score matrix (Dao et al. 2022, "FlashAttention:
Fast and Memory-Efficient Exact Attention with IO-Awareness"): keys and values are visited
in blocks, and each query keeps a running max, a running softmax denominator and an
unnormalised output (the *online softmax*, Milakov & Gimelshein 2018), so only one
``block_q × block_k`` tile of scores exists at a time.

- ``tiled_attention(q, k, v, causal, window, block_q, block_k, workers)``: the algorithm,
  in plain PyTorch, for ``(B, H, T, d)`` inputs; causal and sliding-window masks skip the
  key blocks they hide entirely.
- ``block_mask(...)``: the boolean mask of one tile (None when the whole tile is visible).
- ``tile_count(n, causal, window, block_q, block_k)``: how many tiles a call computes (its
  work is tiles × block_q × block_k, not the number of visible pairs).
- ``check_qkv``: the shape checks every attention variant of notebook 10 shares.
- ``TensorMemoryMeter`` / ``peak_tensor_bytes``: the peak bytes of the tensors one call
  creates, counted operator by operator (the memory check of notebook 10's exercise).

Parallelism over query blocks (each worker owns whole query blocks, the outer loop over
queries) is FlashAttention-2's scheme (Dao 2023); the first paper's outer loop ran over key
blocks and parallelised over batch and heads only.
"""

from __future__ import annotations

import math
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch

from course_utils.params import positive_int

DEFAULT_BLOCK_Q = 256  # tuned on the 2-core course CPU (notebook 10)
DEFAULT_BLOCK_K = 128
TILED_TOLERANCE = 1e-5  # fp32: max |tiled - naive| on unit-variance inputs, measured ~1e-7

__all__ = ["DEFAULT_BLOCK_K", "DEFAULT_BLOCK_Q", "TILED_TOLERANCE", "TensorMemoryMeter", "block_mask",
           "check_qkv", "peak_tensor_bytes", "tile_count", "tiled_attention"]


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> None:
    """q ``(B, H, Tq, d)``, k ``(B, H, Tk, d)``, v ``(B, H, Tk, dv)``, floating point; causal
    needs Tq == Tk. Raises ValueError naming the shapes given."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be 4-D (batch, heads, seq_len, head_dim); got shapes "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            "q, k, v must share (batch, heads); got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            "expected q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, dv); got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            "causal attention here is self-attention: q and k need the same length, got "
            f"Tq={q.shape[-2]} and Tk={k.shape[-2]}"
        )
    if not q.is_floating_point():
        raise ValueError(f"q, k, v must be floating point, got dtype {q.dtype}")


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    window: int | None = None,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
    workers: int | None = None,
) -> torch.Tensor:
    """FlashAttention's algorithm in plain PyTorch: exact attention, no n × n matrix.

    q ``(B, H, Tq, d)``, k ``(B, H, Tk, d)``, v ``(B, H, Tk, dv)`` -> ``(B, H, Tq, dv)``.
    For each block of ``block_q`` queries it walks over blocks of ``block_k`` keys, keeping
    per query a running max ``m``, a running softmax denominator ``l`` and an unnormalised
    output ``acc``. A new block with scores s updates them as

        m' = max(m, rowmax(s));  p = exp(s - m');  c = exp(m - m')
        l' = c·l + rowsum(p);    acc' = c·acc + p v

    and the output is ``acc / l`` at the end: the same numbers as softmax(s) v, computed
    with one ``(B·H, block_q, block_k)`` score tile alive at a time. Key blocks that the
    causal or sliding-window mask hides completely are never computed. Lengths need not be
    multiples of the block sizes. A query that may attend to no key gets a zero output.

    Query blocks are independent, so on CPU ``workers`` threads (default: torch's thread
    count) each take whole query blocks and run their tile ops single-threaded, as
    FlashAttention-2 hands one query block to each GPU thread block (the first
    FlashAttention looped over key blocks outside and parallelised over batch and heads
    only). The memory in flight is then ``workers`` tiles.
    """
    check_qkv(q, k, v, causal)
    positive_int("block_q", block_q)
    positive_int("block_k", block_k)
    if window is not None:
        positive_int("window", window)
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(f"a sliding window needs Tq == Tk, got {q.shape[-2]} and {k.shape[-2]}")
    batch, heads, n_q, d = q.shape
    n_k, d_v = k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d)
    # Fold batch and heads into one batch dimension so each tile is one bmm.
    q = q.reshape(batch * heads, n_q, d)  # (BH, Tq, d)
    k_t = k.reshape(batch * heads, n_k, d).transpose(1, 2)  # (BH, d, Tk)
    v = v.reshape(batch * heads, n_k, d_v)  # (BH, Tk, dv)
    out = torch.empty(batch * heads, n_q, d_v, dtype=q.dtype, device=q.device)
    masked = causal or window is not None

    def attend_query_block(q_start: int) -> None:
        """One query block against every key block it can see; writes its rows of out."""
        q_end = min(q_start + block_q, n_q)
        q_block = q[:, q_start:q_end] * scale  # (BH, bq, d): scale q, not the bq×bk scores
        rows = q_end - q_start
        running_max = torch.full((batch * heads, rows, 1), -math.inf, dtype=q.dtype, device=q.device)
        running_sum = torch.zeros(batch * heads, rows, 1, dtype=q.dtype, device=q.device)
        acc = torch.zeros(batch * heads, rows, d_v, dtype=q.dtype, device=q.device)
        # The keys this query block can see: skip whole blocks the mask hides.
        k_lo, k_hi = 0, n_k
        if causal:
            k_hi = q_end
        if window is not None:
            k_lo = max(0, q_start - window + 1)
            if not causal:
                k_hi = min(n_k, q_end - 1 + window)
        # One score buffer per query block, reused by every full-width tile: fewer, larger
        # allocations keep the memory footprint close to one tile per worker.
        tile = torch.empty(batch * heads, rows, min(block_k, k_hi - k_lo), dtype=q.dtype,
                           device=q.device)
        for k_start in range(k_lo, k_hi, block_k):
            k_end = min(k_start + block_k, k_hi)
            if k_end - k_start == tile.shape[-1]:
                scores = torch.bmm(q_block, k_t[:, :, k_start:k_end], out=tile)  # (BH, bq, bk)
            else:  # the last, narrower tile
                scores = torch.bmm(q_block, k_t[:, :, k_start:k_end])
            if masked:
                allowed = block_mask(q_start, q_end, k_start, k_end, causal, window, q.device)
                if allowed is not None:
                    scores.masked_fill_(~allowed, -math.inf)
            new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))  # (BH, bq, 1)
            # A row with no visible key yet has max -inf: subtract 0 instead (exp(-inf) = 0).
            safe_max = new_max.masked_fill(new_max == -math.inf, 0.0) if masked else new_max
            probs = scores.sub_(safe_max).exp_()  # (BH, bq, bk), in place: no second tile
            correction = torch.exp(running_max - safe_max)  # (BH, bq, 1): rescale the past
            running_sum.mul_(correction).add_(probs.sum(dim=-1, keepdim=True))
            acc.mul_(correction).baddbmm_(probs, v[:, k_start:k_end])  # acc = c·acc + p v
            running_max = new_max
        if masked:  # rows that saw no key at all: output 0, as course_utils.attention does
            running_sum.masked_fill_(running_sum == 0, 1.0)
        out[:, q_start:q_end] = acc.div_(running_sum)

    starts = range(0, n_q, block_q)
    workers = min(torch.get_num_threads() if workers is None else positive_int("workers", workers),
                  len(starts))
    if workers <= 1 or q.device.type != "cpu":
        for q_start in starts:
            attend_query_block(q_start)
    else:  # query blocks are independent: worker threads take them (FlashAttention-2's scheme)
        # Each worker runs its tile ops single-threaded (set_num_threads is per thread for
        # OpenMP and MKL: the caller keeps its count). Left multi-threaded, every small tile op
        # would wait for a team of threads at a barrier: thousands of barriers per call, each
        # a scheduler time slice when other processes share the cores (20-50x slower, measured).
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            list(pool.map(attend_query_block, starts))
    return out.view(batch, heads, n_q, d_v)


def tile_count(
    n: int, causal: bool = False, window: int | None = None,
    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> int:
    """How many score tiles :func:`tiled_attention` computes for self-attention over n tokens.

    The work it does is (tiles × block_q × block_k), not the number of visible pairs: a
    tile the mask hides only partly is still computed whole.
    """
    for name, value in (("n", n), ("block_q", block_q), ("block_k", block_k)):
        positive_int(name, value)
    tiles = 0
    for q_start in range(0, n, block_q):
        q_end = min(q_start + block_q, n)
        k_lo, k_hi = 0, n
        if causal:
            k_hi = q_end
        if window is not None:
            k_lo = max(0, q_start - positive_int("window", window) + 1)
            if not causal:
                k_hi = min(n, q_end - 1 + window)
        tiles += -(-(k_hi - k_lo) // block_k)
    return tiles


def block_mask(
    q_start: int, q_end: int, k_start: int, k_end: int, causal: bool, window: int | None,
    device: torch.device,
) -> torch.Tensor | None:
    """``(bq, bk)`` boolean mask (True = may attend) for one tile, None if all allowed."""
    row_lo, row_hi = q_start, q_end - 1
    # Fast path: the whole tile is visible (most tiles, far from the diagonal and band edge).
    fully_visible = True
    if causal and k_end - 1 > row_lo:
        fully_visible = False
    if window is not None:
        if row_hi - k_start >= window:
            fully_visible = False
        if not causal and k_end - 1 - row_lo >= window:
            fully_visible = False
    if fully_visible:
        return None
    rows = torch.arange(q_start, q_end, device=device).unsqueeze(1)  # (bq, 1)
    cols = torch.arange(k_start, k_end, device=device).unsqueeze(0)  # (1, bk)
    distance = rows - cols
    allowed = torch.ones(q_end - q_start, k_end - k_start, dtype=torch.bool, device=device)
    if causal:
        allowed &= distance >= 0
    if window is not None:
        allowed &= distance < window
        if not causal:
            allowed &= distance > -window
    return allowed


# ----------------------------------------------------------------------------------------
# memory of one call, counted tensor by tensor (notebook 10's exercise checker)


class TensorMemoryMeter(torch.utils._python_dispatch.TorchDispatchMode):
    """Inside ``with TensorMemoryMeter(exclude=(q, k, v)) as meter:``, ``meter.peak`` is the
    largest number of bytes held at once by tensors created in the block (storage bytes,
    each storage counted once however many views share it; storages of ``exclude`` are not
    counted), and ``meter.largest`` the size of the biggest single one.

    Counted at the level of PyTorch operators (a ``TorchDispatchMode``), so it sees every
    tensor an attention implementation allocates — the n × n score matrix of the naive one,
    the tiles of a tiled one — and nothing the allocator or the process does around them:
    the same numbers on every machine, unlike the resident memory ``tools/bench.py`` probes.
    A storage is released when the last tensor created in the block that uses it is garbage
    collected. Dispatch modes are per thread: run multi-threaded code (``tiled_attention``'s
    workers) with one worker to measure it.
    """

    def __init__(self, exclude: tuple[torch.Tensor, ...] = ()) -> None:
        super().__init__()
        self._skip = {t.untyped_storage().data_ptr() for t in exclude}
        self._live: dict[int, list] = {}  # storage address -> [bytes, ids of its tensors]
        self.current = self.peak = self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self._track(out)
        elif isinstance(out, (tuple, list)):
            for item in torch.utils._pytree.tree_leaves(out):
                if isinstance(item, torch.Tensor):
                    self._track(item)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        address = storage.data_ptr()
        if address == 0 or address in self._skip:
            return
        entry = self._live.get(address)
        if entry is None:
            entry = self._live[address] = [storage.nbytes(), {}]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
            self.largest = max(self.largest, entry[0])
        key = id(tensor)
        if key not in entry[1]:  # an in-place op returns a tensor already counted
            entry[1][key] = weakref.ref(tensor, lambda _, a=address, k=key: self._release(a, k))

    def _release(self, address: int, key: int) -> None:
        entry = self._live.get(address)
        if entry is None:
            return
        entry[1].pop(key, None)
        if not entry[1]:
            self.current -= entry[0]
            del self._live[address]


def peak_tensor_bytes(fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> tuple[torch.Tensor, int]:
    """``(fn(q, k, v, **kwargs), peak bytes of the tensors it created)``, inputs excluded
    (:class:`TensorMemoryMeter`). The output counts: it is (B, H, Tq, dv), O(n)."""
    with torch.no_grad(), TensorMemoryMeter(exclude=(q, k, v)) as meter:
        out = fn(q, k, v, **kwargs)
    return out, meter.peak
