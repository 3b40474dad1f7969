"""Merge methods: pure per-tensor functions and the registry that describes their parameters.

Every function takes the input tensors as stored (e.g. bf16), computes in float32 block by block
and returns the output in `out_dtype`; the planner (`merge.py`) reads and writes. Conventions follow mergekit 0.1.5 exactly (ALGORITHMS.md §6), so a mergekit YAML
gives the same weights here:

- `linear`: Σ wᵢθᵢ / Σ wᵢ (`normalize`, default on).
- task-arithmetic family (`task_arithmetic`, `ties`, `dare_linear`, `dare_ties`): δᵢ = θᵢ − θ_base,
  optionally sparsified (TIES: keep the `density` share of largest |δᵢ|; DARE: keep each entry with
  probability `density`), weighted, optionally sign-elected (TIES "sum": the sign of Σ wᵢδᵢ, ties → +),
  summed, optionally divided by the weights that voted (`normalize`), times `lambda`, added to θ_base.
- `slerp`: spherical interpolation of the whole flattened tensor from the base (t=0) to the other
  model (t=1), linear when the two are nearly parallel (|cos| > 0.9995).
- `model_stock`: t = N·cosθ / (1 + (N−1)·cosθ) from the mean pairwise cosine of the fine-tunes'
  offsets from the base; θ = t·mean(θᵢ) + (1−t)·θ_base.
- `passthrough`: one input, optionally scaled.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch

REQUIRED = object()  # marks a parameter without a default


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # float or bool
    default: object = REQUIRED
    # "shared": one value per tensor; "input": one per input model (base included);
    # "non_base": one per input model except the base.
    scope: Literal["shared", "input", "non_base"] = "shared"


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., torch.Tensor]
    params: tuple[Param, ...]
    base: Literal["required", "none"]  # "none": the base, when given, is one more input
    min_inputs: int = 1  # counting the base
    max_inputs: int | None = None
    fixed: dict = field(default_factory=dict)  # settings of a family member (sparsify, consensus)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


# --------------------------------------------------------------------------- blocks
#
# Every method works on blocks of rows (≤ CHUNK_ELEMENTS values, converted to float32 one block at a
# time), so a merge needs the inputs in their stored dtype plus the output, not float32 copies of
# every input: for a 70B embedding (2 GB in bf16) that is the difference between ~8 GB and ~30 GB per
# tensor. Whole-tensor statistics (norms, cosines, TIES thresholds, DARE rescaling) are accumulated
# over the blocks in a first pass; the second pass writes the output.

CHUNK_ELEMENTS = 1 << 20


def rows(t: torch.Tensor) -> torch.Tensor:
    """A 2-D view: one row per output unit (a 1-D tensor is one row)."""
    return t.reshape(1, -1) if t.dim() <= 1 else t.reshape(t.shape[0], -1)


def row_blocks(t: torch.Tensor) -> list[slice]:
    """Row ranges of `rows(t)` holding at most CHUNK_ELEMENTS values each (at least one row)."""
    n_rows, width = rows(t).shape
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def f32(t: torch.Tensor, block: slice) -> torch.Tensor:
    return rows(t)[block].float()


def new_output(like: torch.Tensor, out_dtype: torch.dtype | None) -> torch.Tensor:
    return torch.empty(like.shape, dtype=out_dtype or like.dtype)


# --------------------------------------------------------------------------- sparsification


def kth_largest(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> torch.Tensor:
    """The k-th largest of non-negative float32 values given in chunks, exactly, in O(chunk) memory.

    A two-pass radix select: non-negative floats order like their int32 bit patterns, so a histogram
    of the high 16 bits finds the bucket holding the k-th largest, and one of the low 16 bits inside
    that bucket finds the value. (torch.kthvalue would need the whole float32 tensor plus a copy.)
    """
    buckets = 1 << 16
    high = torch.zeros(buckets, dtype=torch.int64)
    for c in chunks():
        high += torch.bincount((c.reshape(-1).view(torch.int32) >> 16).long(), minlength=buckets)
    from_top = high.flip(0).cumsum(0)
    i = int(torch.searchsorted(from_top, k))
    bucket, above = buckets - 1 - i, int(from_top[i - 1]) if i else 0
    low = torch.zeros(buckets, dtype=torch.int64)
    for c in chunks():
        bits = c.reshape(-1).view(torch.int32)
        low += torch.bincount((bits[(bits >> 16) == bucket] & 0xFFFF).long(), minlength=buckets)
    j = int(torch.searchsorted(low.flip(0).cumsum(0), k - above))
    return torch.tensor([(bucket << 16) | (buckets - 1 - j)], dtype=torch.int32).view(torch.float32)[0]


def tensor_generator(seed: int, *index: int) -> torch.Generator:
    """The random stream for one (tensor, input, block): independent of thread order, so seeded merges repeat.

    Mixed through a hash because torch's CPU generator keeps only the low 32 bits of a seed.
    """
    digest = hashlib.sha256("/".join(map(str, (seed, *index))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class Pruning:
    """One task vector's sparsification, decided from whole-tensor statistics, applied block by block.

    `magnitude` (TIES): keep the k = max(1, ⌊density·n⌋) entries of largest |δ| (ties at the cut all
    kept). `random` (DARE): keep each entry with probability `density`. `rescale` scales the kept
    entries so the L1 norm matches the unpruned δ (mergekit ≥ 2025-02; the DARE paper divides by
    `density`, which is the same in expectation).
    """

    def __init__(self, how: str | None, density: float, rescale: bool, seed: int, index: int, delta_blocks):
        self.how = None if how is None or density >= 1 else how
        self.density, self.seed, self.index, self.scale = density, seed, index, 1.0
        if self.how == "magnitude" and density > 0:
            n = sum(d.numel() for d in delta_blocks())
            k = max(1, int(density * n))
            self.threshold = kth_largest(lambda: (d.abs() for d in delta_blocks()), k)
        if self.how and rescale and density > 0:
            before = after = 0.0
            for b, d in enumerate(delta_blocks()):
                before += float(d.abs().sum(dtype=torch.float64))
                after += float((d * self.mask(d, b)).abs().sum(dtype=torch.float64))
            if before >= 1e-7 and after >= 1e-7:
                self.scale = before / after

    def mask(self, delta: torch.Tensor, block: int) -> torch.Tensor:
        if self.how == "magnitude":
            return delta.abs() >= self.threshold
        return torch.rand(delta.shape, generator=tensor_generator(self.seed, self.index, block)) < self.density

    def __call__(self, delta: torch.Tensor, block: int) -> torch.Tensor:
        if self.how is None:
            return delta
        if self.density <= 0:
            return torch.zeros_like(delta)
        kept = delta * self.mask(delta, block)
        return kept * self.scale if self.scale != 1.0 else kept


# --------------------------------------------------------------------------- methods


def linear(*tensors: torch.Tensor, weight: list[float], normalize: bool = True, out_dtype=None) -> torch.Tensor:
    out = new_output(tensors[0], out_dtype)
    total = sum(weight)
    for b in row_blocks(tensors[0]):
        acc = torch.zeros_like(f32(tensors[0], b))
        for t, w in zip(tensors, weight):
            acc.add_(f32(t, b), alpha=w)
        rows(out)[b] = acc / total if normalize else acc
    return out


def task_arithmetic(
    base: torch.Tensor,
    *tensors: torch.Tensor,
    weight: list[float],
    density: list[float],
    normalize: bool,
    rescale: bool,
    sparsification: str | None = None,
    consensus: str | None = None,
    lambda_: float = 1.0,  # mergekit's `lambda` (a Python keyword)
    seed: int = 0,
    int8_mask: bool = False,  # accepted for mergekit configs: it only changes mergekit's mask dtype
    out_dtype=None,
) -> torch.Tensor:
    """The generalised task arithmetic of mergekit (`task_arithmetic`, `ties`, `dare_*`), one tensor."""
    blocks = row_blocks(base)

    def delta_blocks(t: torch.Tensor):
        return lambda: (f32(t, b) - f32(base, b) for b in blocks)

    prunings = [Pruning(sparsification, density[i], rescale, seed, i, delta_blocks(t)) for i, t in enumerate(tensors)]
    out = new_output(base, out_dtype)
    total = sum(weight) if abs(sum(weight)) >= 1e-8 else 1.0
    for j, b in enumerate(blocks):
        start = f32(base, b)
        deltas = [prune(f32(t, b) - start, j).mul_(w) for t, prune, w in zip(tensors, prunings, weight)]
        if consensus is None:
            mixed, divisor = sum(deltas), total
        else:  # TIES sign election: the sign of the summed weighted deltas (0 counts as +)
            majority = torch.where(sum(deltas) >= 0, 1.0, -1.0)
            mixed, divisor = torch.zeros_like(start), torch.zeros_like(start)
            for delta, w in zip(deltas, weight):
                agrees = delta.sign() == majority  # a pruned (zero) entry never agrees, so never votes
                mixed += delta * agrees
                divisor += w * agrees
            divisor[divisor == 0] = 1
        if normalize:
            mixed = mixed / divisor
        rows(out)[b] = start + mixed * lambda_
    return out


def slerp(base: torch.Tensor, other: torch.Tensor, t: float, out_dtype=None, dot_threshold: float = 0.9995, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation over the flattened tensor, applied to the unnormalised tensors."""
    blocks = row_blocks(base)
    aa = bb = ab = 0.0  # block sums in float32 (BLAS dot), totals in Python floats (float64)
    for blk in blocks:
        a, b = f32(base, blk).reshape(-1), f32(other, blk).reshape(-1)
        aa, bb, ab = aa + float(torch.dot(a, a)), bb + float(torch.dot(b, b)), ab + float(torch.dot(a, b))
    norm_a, norm_b = math.sqrt(aa), math.sqrt(bb)
    norm_a, norm_b = (norm_a if norm_a > eps else 1.0), (norm_b if norm_b > eps else 1.0)
    dot = min(1.0, max(-1.0, ab / (norm_a * norm_b)))
    if abs(dot) > dot_threshold:  # nearly parallel: sin θ ≈ 0, lerp is exact enough
        coef_a, coef_b = 1 - t, t
    else:
        theta = math.acos(dot)
        coef_a, coef_b = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
    out = new_output(base, out_dtype)
    for blk in blocks:
        rows(out)[blk] = torch.mul(f32(base, blk), coef_a).add_(f32(other, blk), alpha=coef_b)
    return out


def _stock_t(cos: torch.Tensor, n: int) -> torch.Tensor:
    """Model Stock's interpolation ratio t = N·cosθ / (1 + (N−1)·cosθ); 0 where that is singular."""
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6  # opposing updates: keep the base rather than amplify them
    return torch.where(singular, 0.0, n * cos / torch.where(singular, 1.0, denominator))


def model_stock(base: torch.Tensor, *tensors: torch.Tensor, filter_wise: bool = False, out_dtype=None) -> torch.Tensor:
    """Model Stock (Jang et al. 2024): interpolate between the fine-tunes' mean and the base.

    cosθ is the mean pairwise cosine of the offsets θᵢ − θ_base, over the whole tensor or, with
    `filter_wise`, per output row (blocks are whole rows, so each row's t is computed in its block).
    """
    n, blocks = len(tensors), row_blocks(base)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]

    def cosines(offsets: list[torch.Tensor], dims) -> torch.Tensor:
        sq = [(o * o).sum(dim=dims, dtype=torch.float64) for o in offsets]
        cos = [((offsets[i] * offsets[j]).sum(dim=dims, dtype=torch.float64) / (sq[i].sqrt() * sq[j].sqrt()).clamp(min=1e-6)).clamp(-1, 1) for i, j in pairs]
        return torch.stack(cos).mean(dim=0)

    if not filter_wise:
        sq = torch.zeros(n, dtype=torch.float64)
        dots = torch.zeros(len(pairs), dtype=torch.float64)
        for blk in blocks:
            w0 = f32(base, blk)
            offsets = [f32(t, blk) - w0 for t in tensors]
            sq += torch.stack([(o * o).sum(dtype=torch.float64) for o in offsets])
            dots += torch.stack([(offsets[i] * offsets[j]).sum(dtype=torch.float64) for i, j in pairs])
        norms = sq.sqrt()
        cos = torch.stack([(dots[p] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1) for p, (i, j) in enumerate(pairs)]).mean()
        ratio = _stock_t(cos, n).float()
    out = new_output(base, out_dtype)
    for blk in blocks:
        w0 = f32(base, blk)
        ws = [f32(t, blk) for t in tensors]
        if filter_wise:
            ratio = _stock_t(cosines([w - w0 for w in ws], dims=1), n).float().unsqueeze(-1)
        rows(out)[blk] = ratio * (sum(ws) / n) + (1 - ratio) * w0
    return out


def passthrough(tensor: torch.Tensor, scale: list[float | None] | None = None, out_dtype=None) -> torch.Tensor:
    value = scale[0] if scale else None
    out = new_output(tensor, out_dtype)
    for blk in row_blocks(tensor):
        rows(out)[blk] = f32(tensor, blk) * value if value is not None else rows(tensor)[blk]
    return out


# --------------------------------------------------------------------------- registry

_GTA_PARAMS = (
    Param("weight", float, scope="non_base"),
    Param("density", float, 1.0, scope="non_base"),
    Param("lambda", float, 1.0),
    Param("int8_mask", bool, False),
)


def _gta(name: str, sparsification: str | None, consensus: str | None, normalize: bool, rescale: bool) -> Method:
    return Method(
        name,
        task_arithmetic,
        _GTA_PARAMS + (Param("normalize", bool, normalize), Param("rescale", bool, rescale)),
        base="required",
        min_inputs=2,
        fixed={"sparsification": sparsification, "consensus": consensus},
    )


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("linear", linear, (Param("weight", float, scope="input"), Param("normalize", bool, True)), base="none"),
        _gta("task_arithmetic", None, None, normalize=False, rescale=False),
        _gta("ties", "magnitude", "sum", normalize=True, rescale=False),
        _gta("dare_linear", "random", None, normalize=False, rescale=True),
        _gta("dare_ties", "random", "sum", normalize=False, rescale=True),
        Method("slerp", slerp, (Param("t", float),), base="required", min_inputs=2, max_inputs=2),
        Method("model_stock", model_stock, (Param("filter_wise", bool, False),), base="required", min_inputs=3),
        Method("passthrough", passthrough, (Param("scale", float, None, scope="input"),), base="none", max_inputs=1),
    )
}
RANDOM_METHODS = {"dare_linear", "dare_ties"}
