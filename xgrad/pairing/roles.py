"""What a parameter's name says about its role, for pairing parameters by name.

A name such as ``self_attn.q_proj.weight``, ``_query_dense.kernel``, ``query_kernel`` or
``wq`` names a projection's *role* (query, key, value, output, gate, up) whatever the
framework or code base; ``in_proj_weight``, ``c_attn`` or ``qkv`` name several roles stacked
(query, key, value, in that order). Two parameters whose roles are both known and differ are
never paired (a query kernel is not a key and a value kernel stacked, even where the shapes
fit); where both are known and agree, the names decide. A name of no known role (``w1``,
``a``) says nothing either way. The words are matched whole, in the name relative to the
paired modules (``self_attn.q_proj.weight`` within a decoder layer, ``weight`` within
``q_proj``), innermost first.

Example:
    >>> role("self_attn.q_proj.weight"), role("_key_dense.kernel"), role("in_proj_weight")
    (('q',), ('k',), ('q', 'k', 'v'))
    >>> role("w1") is None, bias_like("query_bias"), bias_like("kernel")
    (True, True, False)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

__all__ = ["bias_like", "names_say", "order_by_roles", "role"]

Role = tuple[str, ...]
"""The roles a parameter holds, in the order they are stacked (one for a plain projection)."""

_VOCABULARY: dict[Role, frozenset[str]] = {
    ("q",): frozenset({"q", "query", "wq", "q_proj", "query_proj", "to_q", "q_lin"}),
    ("k",): frozenset({"k", "key", "wk", "k_proj", "key_proj", "to_k", "k_lin"}),
    ("v",): frozenset({"v", "value", "wv", "v_proj", "value_proj", "to_v", "v_lin"}),
    # a module's output projection: attention's o_proj and an MLP's down projection alike
    # (T5 calls the MLP's ``wo``, Meta's LLaMA the attention's)
    ("out",): frozenset(
        {"o", "out", "wo", "o_proj", "out_proj", "output", "attention_output", "to_out"}
        | {"out_lin", "c_proj", "down", "down_proj", "fc2", "fc_out"}
    ),
    ("gate",): frozenset({"gate", "gate_proj", "wi_0"}),
    ("up",): frozenset({"up", "up_proj", "c_fc", "fc1", "fc_in", "wi", "wi_1"}),
    # stacked q, k, v blocks (GPT-NeoX's query_key_value interleaves them per head, so it is
    # left out: its name does not say the order of a plain stack)
    ("q", "k", "v"): frozenset({"in_proj", "qkv", "qkv_proj", "c_attn", "wqkv", "to_qkv"}),
    ("k", "v"): frozenset({"kv", "kv_proj", "wkv", "to_kv"}),
    ("gate", "up"): frozenset({"gate_up", "gate_up_proj"}),
}
_WORDS = {word: r for r, words in _VOCABULARY.items() for word in words}
_LONGEST = max(w.count("_") + 1 for w in _WORDS)
_KIND_WORDS = frozenset({"kernel", "weight", "w", "bias", "b", "scale", "gamma", "beta"})
_BIAS_WORDS = frozenset({"bias", "b", "beta"})
_WEIGHT_WORDS = frozenset({"kernel", "weight", "w", "scale", "gamma", "embedding"})


def _words(component: str) -> list[str]:
    return [w for w in component.lower().split("_") if w]


def _component_role(component: str) -> Role | None:
    words = _words(component)
    while words and words[-1] in _KIND_WORDS:  # query_kernel, in_proj_weight
        words.pop()
    if not words:
        return None
    joined = "_".join(words)
    if joined in _WORDS:
        return _WORDS[joined]
    for n in range(min(_LONGEST, len(words)), 0, -1):  # the longest run of words first
        for start in range(len(words) - n + 1):
            found = "_".join(words[start : start + n])
            if len(found) > 1 and found in _WORDS:  # a lone letter counts only alone
                return _WORDS[found]
    return None


def role(name: str) -> Role | None:
    """The roles a parameter's name says it holds (innermost named part first), or ``None``
    when it names none."""
    for component in reversed(re.split(r"[./]", name)):
        found = _component_role(component)
        if found is not None:
            return found
    return None


def bias_like(name: str) -> bool | None:
    """Whether the name's last part names a bias (``True``), a weight (``False``), or
    neither (``None``)."""
    words = set(_words(re.split(r"[./]", name)[-1]))
    if words & _BIAS_WORDS:
        return True
    if words & _WEIGHT_WORDS:
        return False
    return None


def names_say(refs: Sequence[str], cands: Sequence[str]) -> str | None:
    """What the names (relative to the paired modules) say of pairing the reference's
    ``refs`` with the candidate's ``cands`` (one side may stack several): ``"agree"`` (the
    same names, or the same roles), ``"conflict"`` (a bias against a weight, or roles that
    differ where both are known), or ``None`` (they do not tell)."""
    kinds = {bias_like(n) for n in (*refs, *cands)} - {None}
    if len(kinds) > 1:
        return "conflict"
    r_roles, c_roles = [role(n) for n in refs], [role(n) for n in cands]
    r_known = [x for r in r_roles if r for x in r]
    c_known = [x for r in c_roles if r for x in r]
    r_all, c_all = None not in r_roles, None not in c_roles
    if r_all and c_all:
        return "agree" if Counter(r_known) == Counter(c_known) else "conflict"
    if len(refs) == len(cands) == 1 and refs[0].split(".")[-1] == cands[0].split(".")[-1]:
        # the same local name in the two paired modules (a norm's scale, mean and var, in
        # canonical names on both sides), no role saying otherwise
        return "agree"
    if (c_all and _exceeds(r_known, c_known)) or (r_all and _exceeds(c_known, r_known)):
        return "conflict"
    return None


def _exceeds(some: list[str], whole: list[str]) -> bool:
    """Whether roles named on one side are more than the other side (all known) holds."""
    return bool(Counter(some) - Counter(whole))


def order_by_roles(stacked: str, parts: Sequence[str]) -> list[str] | None:
    """The ``parts`` in the order the roles of ``stacked`` stack them (``in_proj`` stacks
    q, k, v), or ``None`` when the names do not say it."""
    whole = role(stacked)
    roles = [role(p) for p in parts]
    if whole is None or None in roles or len(set(roles)) != len(roles):
        return None
    flat = [x for r in roles for x in r]  # type: ignore[union-attr]
    if Counter(flat) != Counter(whole):
        return None
    out: list[str] = []
    at = 0
    while at < len(whole):
        for p, r in zip(parts, roles, strict=True):
            if p not in out and r is not None and tuple(whole[at : at + len(r)]) == r:
                out.append(p)
                at += len(r)
                break
        else:
            return None
    return out
