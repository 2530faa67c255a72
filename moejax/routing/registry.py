"""The routing registry: MoeConfig.router name -> its RouterFamily (moejax/routing/family.py).

A new family is one module under moejax/routing/ that defines FAMILY, plus one row here.
"""

from __future__ import annotations

from typing import Dict

from moejax.routing import (balanced, deepseek, deepseek_v2, dense, expert_choice, gshard,
                            hierarchical, noisy_top_k, soft_moe, top_k)
from moejax.routing.family import RouterFamily

FAMILIES: Dict[str, RouterFamily] = {f.name: f for f in (
    top_k.FAMILY, gshard.FAMILY, noisy_top_k.FAMILY, expert_choice.FAMILY, deepseek.FAMILY,
    deepseek_v2.FAMILY, dense.FAMILY, soft_moe.FAMILY, balanced.FAMILY, hierarchical.FAMILY,
    hierarchical.DENSE_FAMILY)}
ROUTERS = tuple(FAMILIES)
TOKEN_CHOICE_ROUTERS = tuple(name for name, f in FAMILIES.items() if f.choice == "token")


def family(cfg) -> RouterFamily:
    """The family of a MoeConfig (or of a router name)."""
    name = cfg if isinstance(cfg, str) else cfg.router
    if name not in FAMILIES:
        raise KeyError(f"moe.router={name!r} is not one of {', '.join(ROUTERS)}")
    return FAMILIES[name]
