"""Merge methods: pure per-tensor functions and the registry that describes their parameters.

Every function takes float32 tensors and returns a float32 tensor; the planner (`merge.py`) reads,
casts and writes. Conventions follow mergekit 0.1.5 exactly (ALGORITHMS.md §6), so a mergekit YAML
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
from dataclasses import dataclass, field
from typing import Callable, Literal

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


# --------------------------------------------------------------------------- sparsification


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trim: keep the k = max(1, ⌊density·n⌋) entries of largest magnitude (ties at the cut all kept)."""
    n = delta.numel()
    k = max(1, int(density * n))
    magnitudes = delta.abs().reshape(-1)
    # kthvalue (a selection, no sort) of the (n−k+1)-th smallest = the k-th largest.
    threshold = torch.kthvalue(magnitudes, n - k + 1).values
    return delta.abs() >= threshold


def rescale_to_l1(masked: torch.Tensor, original: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale a pruned delta back to the L1 norm of the unpruned one (mergekit ≥ 2025-02's DARE rescale).

    The DARE paper divides by `density` instead; both restore the delta's expected size, the L1 match
    does it exactly per tensor.
    """
    before, after = original.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def sparsify(
    delta: torch.Tensor, density: float, how: str | None, rescale: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Prune a task vector: `magnitude` (TIES), `random` (DARE) or None (keep all)."""
    if how is None or density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    if how == "magnitude":
        mask = magnitude_mask(delta, density)
    else:
        mask = torch.rand(delta.shape, generator=generator) < density
    masked = delta * mask
    return rescale_to_l1(masked, delta) if rescale else masked


def tensor_generator(seed: int, index: int) -> torch.Generator:
    """The random stream for one (tensor, input) pair: independent of thread order, so seeded merges repeat.

    Mixed through a hash because torch's CPU generator keeps only the low 32 bits of a seed.
    """
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


# --------------------------------------------------------------------------- methods


def linear(*tensors: torch.Tensor, weight: list[float], normalize: bool = True) -> torch.Tensor:
    out = torch.zeros_like(tensors[0])
    for tensor, w in zip(tensors, weight):
        out.add_(tensor, alpha=w)
    return out / sum(weight) if normalize else out


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
) -> torch.Tensor:
    """The generalised task arithmetic of mergekit (`task_arithmetic`, `ties`, `dare_*`), one tensor.

    Without consensus, deltas are accumulated one model at a time (one float32 scratch). With TIES's
    sign election each weighted delta is needed twice (to vote, then to be kept or dropped), so they
    are computed once and kept: N float32 copies, as in the paper's formulation.
    """
    def weighted_delta(i: int, tensor: torch.Tensor) -> torch.Tensor:
        delta = tensor - base
        generator = tensor_generator(seed, i) if sparsification == "random" else None
        return sparsify(delta, density[i], sparsification, rescale, generator).mul_(weight[i])

    if consensus is None:
        mixed = torch.zeros_like(base)
        for i, tensor in enumerate(tensors):
            mixed += weighted_delta(i, tensor)
        divisor = sum(weight)
        if abs(divisor) < 1e-8:
            divisor = 1.0
    else:
        deltas = [weighted_delta(i, t) for i, t in enumerate(tensors)]
        majority = torch.where(sum(deltas) >= 0, 1.0, -1.0)
        mixed = torch.zeros_like(base)
        divisor = torch.zeros_like(base)
        for delta, w in zip(deltas, weight):
            agrees = delta.sign() == majority  # a pruned (zero) entry never agrees, so never votes
            mixed += delta * agrees
            divisor += w * agrees
        divisor[divisor == 0] = 1
    if normalize:
        mixed /= divisor
    if lambda_ != 1:
        mixed *= lambda_
    return base + mixed


def slerp(base: torch.Tensor, other: torch.Tensor, t: float, dot_threshold: float = 0.9995, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation over the flattened tensor, applied to the unnormalised tensors."""
    a, b = base.reshape(-1), other.reshape(-1)
    norm_a, norm_b = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    norm_a = norm_a if norm_a > eps else torch.ones_like(norm_a)
    norm_b = norm_b if norm_b > eps else torch.ones_like(norm_b)
    dot = ((a / norm_a) * (b / norm_b)).sum().clamp(-1, 1)
    if dot.abs() > dot_threshold:  # nearly parallel: sin θ ≈ 0, lerp is exact enough
        return (1 - t) * base + t * other
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    return (torch.sin((1 - t) * theta) / sin_theta) * base + (torch.sin(t * theta) / sin_theta) * other


def model_stock(base: torch.Tensor, *tensors: torch.Tensor, filter_wise: bool = False) -> torch.Tensor:
    """Model Stock (Jang et al. 2024): interpolate between the fine-tunes' mean and the base."""
    shape = base.shape
    if filter_wise:  # one t per output row
        w0 = base.unsqueeze(0) if base.dim() == 1 else base
        ws = [t.unsqueeze(0) if t.dim() == 1 else t for t in tensors]
    else:
        w0, ws = base.reshape(-1), [t.reshape(-1) for t in tensors]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6  # opposing updates: keep the base rather than amplify them
    t = torch.where(singular, 0.0, n * cos / torch.where(singular, 1.0, denominator))
    return (t * (sum(ws) / n) + (1 - t) * w0).reshape(shape)


def passthrough(tensor: torch.Tensor, scale: list[float | None] | None = None) -> torch.Tensor:
    value = scale[0] if scale else None
    return tensor if value is None else tensor * value


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
