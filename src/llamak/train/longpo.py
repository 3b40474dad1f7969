"""LongPO (Chen et al., ICLR 2025, arXiv 2502.13922): short-to-long preference optimisation.

The model teaches itself long context: for a short chunk x_S of a long document x_L and a question
about it, the answer it gives seeing only x_S is *chosen* (y_w), the answer it gives seeing all of
x_L is *rejected* (y_l). The policy reads the long multi-turn sequence; the reference reads each
turn's short context — so the preference pulls long-context answers toward the quality of
short-context ones, while a KL to the short-context reference keeps short-context skill.

The loss, as the authors' code computes it (ALGORITHMS.md §3.3), per record (one long document
with several question/answer turns):

    π_w, π_l   = Σ over turns and answer tokens of log π_θ(y | long multi-turn context)
    ref_w, ref_l = Σ over turns of log π_ref(y_k | x_Sk, question_k)     (short contexts)
    L_pref = −log σ(β · ((π_w − π_l) − (ref_w − ref_l)))
    L_nll  = mean token cross-entropy of the policy on the whole chosen sequence
    loss   = nll_weight · L_nll + pref_weight · L_pref        (defaults β 0.01, pref 0.01, nll 1)

Status: this module holds the loss (tested against hand computation and its limits). Pair
synthesis (`llamak longpo synth`) and the trainer (a `DPOTrainer` subclass fed precomputed
short-context reference log-probs) are the next steps of issue 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LongPOWeights:
    beta: float = 0.01
    pref_weight: float = 0.01
    nll_weight: float = 1.0


def longpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    chosen_nll: torch.Tensor,
    weights: LongPOWeights = LongPOWeights(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The LongPO loss of a batch of records (each tensor: one value per record; `chosen_nll` is
    already the mean token NLL of each chosen sequence). Returns (loss, metrics)."""
    policy_margin = policy_chosen - policy_rejected
    ref_margin = ref_chosen - ref_rejected
    logits = weights.beta * (policy_margin - ref_margin)
    pref = -F.logsigmoid(logits)
    loss = weights.nll_weight * chosen_nll.mean() + weights.pref_weight * pref.mean()
    metrics = {
        "nll": chosen_nll.mean().detach(),
        "pref_loss": pref.mean().detach(),
        "rewards/chosen": (weights.beta * (policy_chosen - ref_chosen)).mean().detach(),
        "rewards/rejected": (weights.beta * (policy_rejected - ref_rejected)).mean().detach(),
        "rewards/margins": (logits).mean().detach(),
        "rewards/accuracies": (logits > 0).float().mean().detach(),
    }
    return loss, metrics


def answer_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Σ log p(label) over the labelled (answer) tokens of each sequence; logits predict the next token."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != ignore_index
    picked = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)
