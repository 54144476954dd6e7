"""Used in notebooks 02, 03, 05: positions — sinusoidal (Vaswani et al. 2017), RoPE (Su et al., RoFormer), ALiBi, T5 buckets.

Used in notebooks 03 and 05, and through ``course_utils.attention`` / ``blocks`` in later ones.

RoPE comes in two memory layouts of the same rotation:

- ``apply_rope``: the *rotate-half* layout of Hugging Face's Llama (SmolLM2 included) and
  GPT-NeoX: the head dimension is split into halves ``[x1, x2]`` and pair ``i`` is
  ``(x1[i], x2[i]) = (x[i], x[i + d/2])``;
- ``apply_rope_adjacent_pairs``: the layout of the RoFormer paper, Meta's Llama reference
  code (``view_as_complex`` on ``(..., d/2, 2)``), GPT-J and llama.cpp's GGUF files: pair
  ``i`` is ``(x[2i], x[2i + 1])``.

Pair ``i`` is rotated by the angle ``position * base ** (-2i / d)`` in both. They are the
same rotation up to a fixed permutation of the head dimensions, ``rope_adjacent_permutation``
(which is why Llama checkpoints converted between the layouts have their W_Q / W_K rows
permuted: transformers undoes llama.cpp's permutation when it loads a GGUF).

Beyond RoPE (notebook 03): ALiBi's slopes and causal bias (``alibi_slopes``, ``alibi_bias``),
T5's relative-position buckets (``t5_relative_position_bucket``), RoFormer's long-range decay
curve (``rope_decay_bound``) and the frequencies of three context-extension methods
(``rope_extended_frequencies``: position interpolation, NTK-aware, YaRN); each is checked
against transformers' own code in ``tests/test_positional_extras.py``.

Every public function refuses bad input with a ``ValueError`` whose message starts with the
function's name and names the argument: ``"apply_rope: x must be …, got …"``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "sinusoidal_encoding", "rope_frequencies", "rope_wavelengths", "rotate_half",
    "apply_rope", "apply_rope_adjacent_pairs", "rope_adjacent_permutation",
    "alibi_slopes", "alibi_bias", "t5_relative_position_bucket", "rope_decay_bound",
    "rope_extended_frequencies", "CONTEXT_EXTENSIONS",
]


def _fail(function: str, message: str) -> ValueError:
    return ValueError(f"{function}: {message}")


def _positive_int(function: str, name: str, value: object, *, even: bool = False) -> int:
    kind = "a positive even integer" if even else "a positive integer"
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(function, f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if even and value % 2:
        raise _fail(function, f"{name} must be even (the dimensions come in pairs), got {value}")
    return value


def _base(function: str, base: object) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base) \
            or base <= 1:
        raise _fail(function, f"base must be a finite number > 1 (e.g. 10000.0), got {base!r}")
    return float(base)


def sinusoidal_encoding(seq_len: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed sinusoidal positional encoding, shape ``(seq_len, d_model)``, float32.

    ``PE[p, 2i] = sin(p / base^(2i/d_model))`` and ``PE[p, 2i+1] = cos(p / base^(2i/d_model))``
    (computed in float64, then rounded). ``seq_len`` ≥ 1, ``d_model`` even ≥ 2, ``base`` > 1.
    """
    _positive_int("sinusoidal_encoding", "seq_len", seq_len)
    _positive_int("sinusoidal_encoding", "d_model", d_model, even=True)
    base = _base("sinusoidal_encoding", base)
    positions = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    angles = positions / base ** (two_i / d_model)  # (T, d/2)
    encoding = torch.empty(seq_len, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angles)
    encoding[:, 1::2] = torch.cos(angles)
    return encoding.to(torch.float32)


def rope_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Angular frequencies ``base ** (-2i / head_dim)`` for i in [0, head_dim/2): ``(d/2,)``.

    Float32, by the same expression (int64 arange -> float) as transformers' default RoPE
    init, so they match Llama models bit for bit.
    """
    _positive_int("rope_frequencies", "head_dim", head_dim, even=True)
    base = _base("rope_frequencies", base)
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_wavelengths(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Wavelength in positions of each RoPE pair, ``2π · base^(2i/d)``: ``(d/2,)``, float64.

    Pair ``i`` turns once every ``wavelength[i]`` positions; the first pair turns fastest
    (wavelength 2π), the last slowest (just under ``2π · base``).
    """
    _positive_int("rope_wavelengths", "head_dim", head_dim, even=True)
    base = _base("rope_wavelengths", base)
    return 2 * math.pi * base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def _check_x(function: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise _fail(function, f"x must be a torch.Tensor of shape (..., T, head_dim), "
                              f"e.g. (B, H, T, d_head), got {type(x).__name__}")
    if x.dim() < 2:
        raise _fail(function, f"x must have shape (..., T, head_dim) (at least 2 dimensions, "
                              f"e.g. (B, H, T, d_head)), got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise _fail(function, f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[-1] == 0 or x.shape[-1] % 2:
        raise _fail(function, f"x's last dimension (head_dim) must be even and > 0 (RoPE rotates "
                              f"pairs), got shape {tuple(x.shape)}")
    return x


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension (the rotate-half RoPE layout).

    x: ``(..., d)`` with d even; returns the same shape.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise _fail("rotate_half", f"x must be a torch.Tensor of shape (..., d), got "
                                   f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[-1] % 2:
        raise _fail("rotate_half", f"x's last dimension must be even, got shape {tuple(x.shape)}")
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope_angles(function: str, x: torch.Tensor, positions: object, base: object) -> torch.Tensor:
    """Angles ``positions ⊗ base^(-2i/d)`` shaped to broadcast against x: ``(..., T, d/2)``.

    Float32 (exactly transformers' arithmetic) for float32/16 inputs, float64 for float64.
    """
    base = _base(function, base)
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    if isinstance(positions, torch.Tensor):
        positions = positions.to(x.device)
    else:
        try:
            positions = torch.as_tensor(positions, device=x.device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise _fail(function, f"positions must be integer positions of shape (T,) or (B, T), "
                                  f"got {type(positions).__name__}") from error
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise _fail(function, f"positions must hold integers (token positions), got dtype {positions.dtype}")
    if positions.dim() not in (1, 2) or positions.shape[-1] != seq_len:
        raise _fail(function, f"positions must have shape (T,) or (B, T) and end in T={seq_len} "
                              f"(x has shape {tuple(x.shape)}), got shape {tuple(positions.shape)}")
    if positions.numel() and int(positions.min()) < 0:
        raise _fail(function, f"positions must be ≥ 0, got min {int(positions.min())}")
    if x.dtype == torch.float64:
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=x.device) / head_dim)
        angles = positions.double().unsqueeze(-1) * inv_freq  # (..., T, d/2)
    else:
        inv_freq = rope_frequencies(head_dim, base).to(x.device)  # (d/2,)
        angles = positions.float().unsqueeze(-1) * inv_freq  # (..., T, d/2)
    if positions.dim() == 2 and x.dim() == 4:  # (B, T) against (B, H, T, d): head axis
        angles = angles.unsqueeze(1)
    try:
        torch.broadcast_shapes(angles.shape[:-1], x.shape[:-1])
    except RuntimeError as error:
        raise _fail(function, f"positions of shape {tuple(positions.shape)} do not broadcast "
                              f"against x of shape {tuple(x.shape)} (batch sizes differ)") from error
    return angles


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate queries or keys by their positions (RoPE), in the rotate-half layout.

    x: ``(..., T, head_dim)`` floating point (e.g. ``(B, H, T, d)``), head_dim even;
    positions: ``(T,)`` or ``(B, T)`` non-negative integers, broadcast against x's leading
    dims (``(B, T)`` aligns with a ``(B, H, T, d)`` x by inserting the head axis); base > 1.
    Returns a tensor of x's shape and dtype. Pair ``(x[i], x[i + d/2])`` is rotated by
    ``position · base^(-2i/d)``, so norms are preserved and ``apply_rope(q, m)·apply_rope(k, n)``
    depends on ``m - n`` only. Angles are float32 for float32/16 inputs (bit for bit what
    transformers' Llama computes) and float64 for float64 inputs.
    """
    x = _check_x("apply_rope", x)
    angles = _rope_angles("apply_rope", x, positions, base)  # (..., T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., T, d): rotate-half layout
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin


def apply_rope_adjacent_pairs(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE in the adjacent-pair layout (RoFormer, Meta's Llama code, GPT-J, GGUF files).

    Same arguments and checks as ``apply_rope``; pair ``i`` is ``(x[2i], x[2i + 1])``, rotated
    by ``position · base^(-2i/d)``. For every x:
    ``apply_rope_adjacent_pairs(x[..., perm]) == apply_rope(x)[..., perm]`` with
    ``perm = rope_adjacent_permutation(d)``.
    """
    x = _check_x("apply_rope_adjacent_pairs", x)
    angles = _rope_angles("apply_rope_adjacent_pairs", x, positions, base)  # (..., T, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # (..., T, d/2) each: the two members of pair i
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (..., T, d/2, 2)
    return rotated.flatten(-2)  # (..., T, d): back to x[2i], x[2i+1] order


def rope_adjacent_permutation(head_dim: int) -> torch.Tensor:
    """Indices ``perm`` (``(head_dim,)``, int64) taking rotate-half order to adjacent pairs.

    ``x[..., perm]`` puts ``x[i]`` at ``2i`` and ``x[i + d/2]`` at ``2i + 1``:
    ``perm = [0, d/2, 1, d/2 + 1, …]``. Applied to the rows of each head of W_Q and W_K, it
    is the permutation llama.cpp applies when it writes a Hugging Face Llama to GGUF.
    """
    _positive_int("rope_adjacent_permutation", "head_dim", head_dim, even=True)
    half = head_dim // 2
    return torch.stack((torch.arange(half), torch.arange(half) + half), dim=1).flatten()


# --- Relative position schemes beyond RoPE (notebook 03) ----------------------------------
#
# ALiBi (Press, Smith & Lewis 2022, "Train Short, Test Long") adds nothing to the tokens: it
# adds a fixed, head-specific linear penalty -m_h · (i - j) to the attention score of query i
# on key j. T5 (Raffel et al. 2020, §2.1) learns one scalar bias per (head, bucket), where a
# bucket groups relative distances: exact for small ones, logarithmic up to max_distance.


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes ``m_h``, shape ``(n_heads,)``, float32.

    For ``n_heads`` a power of 2 the paper's closed form: ``m_h = 2^(-8h / n_heads)``,
    h = 1 … n_heads (8 heads: 1/2, 1/4, …, 1/256). Otherwise (the paper's rule, and its
    reference code): the slopes of the closest smaller power of 2, ``n``, then every other
    slope of ``2n`` heads (the odd ones, ``2^(-8h / 2n)`` for h = 1, 3, 5, …) until there are
    ``n_heads``.
    """
    _positive_int("alibi_slopes", "n_heads", n_heads)

    def power_of_2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_2(closest) + power_of_2(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64).to(torch.float32)


def alibi_bias(n: int, n_heads: int) -> torch.Tensor:
    """ALiBi's causal attention bias, shape ``(n_heads, n, n)``, float32.

    ``bias[h, i, j] = -m_h · (i - j)`` for keys at or before the query (j ≤ i) and ``-inf``
    for later keys (ALiBi was introduced for decoders; the causal mask is part of the bias).
    Add it to the scaled scores ``q·k/√d`` before the softmax; no position is added to the
    token vectors. Shifting both positions by the same amount leaves it unchanged.
    """
    _positive_int("alibi_bias", "n", n)
    _positive_int("alibi_bias", "n_heads", n_heads)
    positions = torch.arange(n)
    distance = (positions[:, None] - positions[None, :]).to(torch.float32)  # (n, n): i - j
    bias = -alibi_slopes(n_heads)[:, None, None] * distance  # (H, n, n)
    return bias.masked_fill(distance < 0, float("-inf"))


def t5_relative_position_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> torch.Tensor:
    """T5's bucket index for each relative position ``key position - query position``.

    relative_position: integer tensor of any shape; returns an int64 tensor of the same
    shape, values in ``[0, num_buckets)``. Bidirectional (the encoder): half of the buckets
    for keys after the query, half for keys at or before it. Unidirectional (the decoder):
    keys after the query all fall into bucket 0 (the causal mask hides them anyway). Of each
    half, the first ``max_exact = buckets // 2`` buckets are exact distances 0 … max_exact-1;
    the rest cover max_exact … max_distance in logarithmically growing bins, and every
    distance ≥ max_distance shares the last bucket. The logarithm is computed in float32 in
    the same order as T5's code (Mesh TensorFlow, transformers' ``T5Attention``), so the
    buckets agree exactly even at bin edges.
    """
    if not isinstance(relative_position, torch.Tensor) or relative_position.dtype.is_floating_point \
            or relative_position.dtype.is_complex or relative_position.dtype == torch.bool:
        got = relative_position.dtype if isinstance(relative_position, torch.Tensor) else type(relative_position).__name__
        raise _fail("t5_relative_position_bucket",
                    f"relative_position must be an integer tensor (key - query positions), got {got}")
    _positive_int("t5_relative_position_bucket", "num_buckets", num_buckets, even=bidirectional)
    _positive_int("t5_relative_position_bucket", "max_distance", max_distance)
    buckets = torch.zeros_like(relative_position, dtype=torch.long)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets  # keys after the query: upper half
        distance = relative_position.abs().long()
    else:
        distance = (-relative_position).clamp(min=0).long()  # only keys before the query count
    max_exact = num_buckets // 2
    if max_exact < 1 or max_distance <= max_exact:
        raise _fail("t5_relative_position_bucket",
                    f"need num_buckets ≥ {4 if bidirectional else 2} and max_distance > {max(max_exact, 1)} "
                    f"(exact buckets), got num_buckets={num_buckets * (2 if bidirectional else 1)}, "
                    f"max_distance={max_distance}")
    # log-spaced bins between max_exact and max_distance (the value at distance 0 is unused)
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).to(torch.long)
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


# --- RoPE's long-range decay and context extension (notebook 03) ---------------------------


def rope_decay_bound(head_dim: int, base: float, distances: torch.Tensor) -> torch.Tensor:
    """RoFormer's long-term-decay curve: ``mean_j |S_j(r)|`` for each relative distance r.

    ``S_j(r) = Σ_{i<j} exp(i · r · θ_i)`` with ``θ_i = base^(-2i/d)`` (Su et al. 2021, §3.4.3).
    By Abel summation, for any q, k: ``|RoPE(q, m)·RoPE(k, n)| ≤ max_i |h_{i+1} - h_i| ·
    Σ_j |S_j(m - n)|``, where ``h_i`` is pair i of q times the conjugate of pair i of k as
    complex numbers (and ``h_{d/2} = 0``), so this mean bounds the score's size up to a
    factor set by q and k. distances: ``(R,)`` integers ≥ 0; returns ``(R,)`` float64.
    """
    _positive_int("rope_decay_bound", "head_dim", head_dim, even=True)
    base = _base("rope_decay_bound", base)
    distances = torch.as_tensor(distances)
    if distances.dtype.is_floating_point or distances.dim() != 1:
        raise _fail("rope_decay_bound", f"distances must be a 1-D integer tensor, got dtype "
                                        f"{distances.dtype}, shape {tuple(distances.shape)}")
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (d/2,)
    phases = torch.polar(torch.ones(len(distances), len(theta), dtype=torch.float64),
                         distances.double()[:, None] * theta)  # (R, d/2): e^{i r θ_i}
    partial_sums = phases.cumsum(dim=-1)  # (R, d/2): S_1 … S_{d/2}
    return partial_sums.abs().mean(dim=-1)


CONTEXT_EXTENSIONS = ("none", "position_interpolation", "ntk", "yarn")


def rope_extended_frequencies(
    head_dim: int,
    base: float,
    factor: float,
    method: str,
    original_context: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """RoPE frequencies for a context ``factor`` × longer than trained: ``((d/2,), scale)``.

    Returns ``(inv_freq, attention_scaling)``: float32 frequencies per pair (radians per
    position) and the factor the cos/sin tables are multiplied by (1 except for YaRN).

    - ``"none"``: the trained frequencies ``base^(-2i/d)``.
    - ``"position_interpolation"`` (Chen et al. 2023): positions scaled by 1/factor, i.e. every
      frequency divided by ``factor``: the longer context maps onto the trained angle range.
    - ``"ntk"`` ("NTK-aware", bloc97 2023): the base is raised to ``base · factor^(d/(d-2))``:
      the fastest pair is unchanged, the slowest is slowed by exactly ``factor``.
    - ``"yarn"`` (Peng et al. 2023): per pair, by the number of turns ``r = L / wavelength`` it
      makes in the trained context L: pairs with r > beta_fast keep their frequency, pairs
      with r < beta_slow are interpolated like position interpolation, a linear ramp in the
      pair index in between (the correction range of the YaRN reference code and
      transformers), plus an attention temperature: ``attention_scaling = 0.1 ln(factor) + 1``.
    """
    _positive_int("rope_extended_frequencies", "head_dim", head_dim, even=True)
    base = _base("rope_extended_frequencies", base)
    _positive_int("rope_extended_frequencies", "original_context", original_context)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
            or factor < 1:
        raise _fail("rope_extended_frequencies", f"factor must be a finite number ≥ 1, got {factor!r}")
    if method not in CONTEXT_EXTENSIONS:
        raise _fail("rope_extended_frequencies", f"method must be one of {CONTEXT_EXTENSIONS}, got {method!r}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim  # (d/2,): 2i/d
    inv_freq = 1.0 / base ** exponents
    if method == "none":
        return inv_freq, 1.0
    if method == "position_interpolation":
        return inv_freq / factor, 1.0
    if method == "ntk":
        return 1.0 / (base * factor ** (head_dim / (head_dim - 2))) ** exponents, 1.0

    def pair_with_turns(turns: float) -> float:  # the (fractional) pair index making `turns` turns in L
        return head_dim * math.log(original_context / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(pair_with_turns(beta_fast)), 0)
    high = min(math.ceil(pair_with_turns(beta_slow)), head_dim - 1)
    if low == high:
        high += 0.001  # as the reference code: avoid a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)  # 0 fast … 1 slow
    interpolated = 1.0 / (factor * base ** exponents)
    extrapolated = 1.0 / base ** exponents
    keep = 1 - ramp  # share of the original frequency
    yarn = interpolated * (1 - keep) + extrapolated * keep
    return yarn, (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)
