"""Pure work on elbv2 `Actions` lists: which target groups they forward to, and the same
actions forwarding to another target group (simple and weighted forwards alike)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Actions = Sequence[Mapping[str, Any]]


def forwarded_to(actions: Actions) -> set[str]:
    """Every target group ARN the actions forward to."""
    found: set[str] = set()
    for action in actions:
        if action.get("Type") != "forward":
            continue
        if isinstance(action.get("TargetGroupArn"), str):
            found.add(action["TargetGroupArn"])
        config = action.get("ForwardConfig")
        for group in config.get("TargetGroups", []) if isinstance(config, Mapping) else []:
            if isinstance(group, Mapping) and isinstance(group.get("TargetGroupArn"), str):
                found.add(group["TargetGroupArn"])
    return found


def retarget(actions: Actions, old: Iterable[str], new: str) -> list[dict[str, Any]]:
    """The actions with every forward to a group in `old` sent to `new` instead; a weighted
    forward that ends up naming `new` twice keeps it once, with the weights added."""
    replaced = set(old)
    result: list[dict[str, Any]] = []
    for action in actions:
        copied: dict[str, Any] = copy.deepcopy(dict(action))
        if copied.get("Type") == "forward":
            if copied.get("TargetGroupArn") in replaced:
                copied["TargetGroupArn"] = new
            config = copied.get("ForwardConfig")
            if isinstance(config, dict) and isinstance(config.get("TargetGroups"), list):
                config["TargetGroups"] = _merged(config["TargetGroups"], replaced, new)
        if copied.get("Type") == "authenticate-oidc":
            # the secret is never returned by Describe*: keep the one the listener has
            copied.setdefault("AuthenticateOidcConfig", {})["UseExistingClientSecret"] = True
        result.append(copied)
    return result


def _merged(groups: list[Any], replaced: set[str], new: str) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for group in groups:
        entry = dict(group)
        arn = entry.get("TargetGroupArn")
        if arn in replaced:
            entry["TargetGroupArn"] = arn = new
        if arn in merged and "Weight" in entry:
            kept = merged[arn]
            kept["Weight"] = int(kept.get("Weight", 1)) + int(entry["Weight"])
        else:
            merged[str(arn)] = entry
    return list(merged.values())


def as_text(actions: Actions) -> str:
    """The canonical JSON text of an actions list (what the record keeps)."""
    return json.dumps(list(actions), sort_keys=True, separators=(",", ":"))


def from_text(text: str) -> list[dict[str, Any]]:
    loaded = json.loads(text)
    if not isinstance(loaded, list) or not all(isinstance(a, dict) for a in loaded):
        raise ValueError("not an actions list")
    return loaded


def comparable(actions: Actions) -> str:
    """Two actions lists that send the traffic the same way compare equal: the fields AWS adds
    on its own (stickiness defaults, a secret flag) are left out."""
    cleaned = []
    for action in actions:
        entry = {k: v for k, v in action.items() if k not in ("AuthenticateOidcConfig",)}
        config = entry.get("ForwardConfig")
        if isinstance(config, Mapping):
            groups = sorted(
                (str(g.get("TargetGroupArn")), int(g.get("Weight", 1)))
                for g in config.get("TargetGroups", [])
                if isinstance(g, Mapping)
            )
            entry["ForwardConfig"] = groups
        cleaned.append(entry)
    return json.dumps(cleaned, sort_keys=True, default=str)
