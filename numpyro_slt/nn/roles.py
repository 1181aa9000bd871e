"""Head roles, decided once from the mechanistic scores of :func:`~numpyro_slt.nn.score_table`.

A head's role follows from its scores and one set of thresholds, :class:`RoleCriteria`:

- **induction** (Olsson et al. 2022): a head of layer ≥ 1 that attends like an induction head
  (induction score ≥ ``induction_score``) *and* carries the copying (mean-ablating it undoes at
  least ``copy_share`` of the in-context gain on repeated sequences, ``copy_ablation``);
- **prefix matching only**: attends like an induction head but does not carry the copying;
- **previous-token**: a layer-0 head whose previous-token score is ≥ ``previous_token_score``.

The study's acceptance checks and its report both read roles from :func:`head_roles`, so a head
has the same role everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._validate import fraction

__all__ = ["RoleCriteria", "prefix_matching_heads", "induction_heads", "previous_token_heads",
           "head_roles"]


@dataclass(frozen=True)
class RoleCriteria:
    """Thresholds on the head scores (each a fraction in [0, 1]).

    Attributes:
        induction_score: least induction (prefix-matching attention) score of an induction head.
        copy_share: least share of the in-context gain that ablating an induction head undoes.
        previous_token_score: least previous-token score of a previous-token head.
    """

    induction_score: float = 0.3
    copy_share: float = 0.1
    previous_token_score: float = 0.3

    def __post_init__(self) -> None:
        for name in ("induction_score", "copy_share", "previous_token_score"):
            object.__setattr__(self, name, fraction(f"RoleCriteria.{name}",
                                                    getattr(self, name)))


def _layer(head: str) -> int:
    return int(head.split(":")[0])


def prefix_matching_heads(head_scores: dict[str, Any],
                          criteria: RoleCriteria = RoleCriteria()) -> list[str]:
    """Heads of layer ≥ 1 whose induction score is ≥ ``criteria.induction_score``."""
    return [h["head"] for h in head_scores["heads"]
            if _layer(h["head"]) >= 1 and h["induction"] >= criteria.induction_score]


def induction_heads(head_scores: dict[str, Any],
                    criteria: RoleCriteria = RoleCriteria()) -> list[str]:
    """Prefix-matching heads that also carry the copying (``copy_ablation`` ≥
    ``criteria.copy_share``). A record without copy ablations (the network does not copy) has no
    induction heads."""
    by_name = {h["head"]: h for h in head_scores["heads"]}
    return [name for name in prefix_matching_heads(head_scores, criteria)
            if (by_name[name].get("copy_ablation") or 0.0) >= criteria.copy_share]


def previous_token_heads(head_scores: dict[str, Any],
                         criteria: RoleCriteria = RoleCriteria()) -> list[str]:
    """Layer-0 heads whose previous-token score is ≥ ``criteria.previous_token_score``."""
    return [h["head"] for h in head_scores["heads"]
            if _layer(h["head"]) == 0 and h["previous_token"] >= criteria.previous_token_score]


def head_roles(head_scores: dict[str, Any],
               criteria: RoleCriteria = RoleCriteria()) -> dict[str, str]:
    """Head → role (``"induction"``, ``"prefix matching only"`` or ``"previous-token"``) for
    every head that has one."""
    roles = {h: "induction" for h in induction_heads(head_scores, criteria)}
    for h in prefix_matching_heads(head_scores, criteria):
        roles.setdefault(h, "prefix matching only")
    for h in previous_token_heads(head_scores, criteria):
        roles.setdefault(h, "previous-token")
    return roles
