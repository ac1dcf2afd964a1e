"""Block groups: a backbone cut into ordered parts, bottom (stem) to top (final stage and norm).

Each backbone supplies the parameter names of its groups from its own matcher (timm's
`group_matcher(coarse=True)`, which gives the same notion of "a block" for ResNet, EfficientNet,
ConvNeXt and ViT; a regex per family for text encoders), so `unfreeze_top=k` means the same thing
on all of them. This module turns those names into groups that know their norm layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class BlockGroup:
    index: int  # 0 is the bottom (stem)
    param_names: list[str]
    params: list[nn.Parameter]
    norm_modules: list[nn.Module]  # norm layers whose parameters live in this group

    @property
    def name(self) -> str:
        return f"g{self.index:02d}"

    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


def children_groups(model: nn.Module) -> list[list[str]]:
    # Models without a group matcher (plain torch modules): one group per top-level child with
    # parameters, in registration order, which is forward order for sequential backbones.
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return list(groups.values())


def groups_from_names(model: nn.Module, names: list[list[str]]) -> list[BlockGroup]:
    """Groups of `model` from its parameter names per group (bottom to top), each with its norm layers."""
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    owner = {}
    for group_index, group in enumerate(names):
        for pname in group:
            owner[pname.rsplit(".", 1)[0] if "." in pname else ""] = group_index
    norms: dict[int, list[nn.Module]] = {i: [] for i in range(len(names))}
    for mname, module in modules.items():
        if isinstance(module, _NORM_TYPES) and mname in owner:
            norms[owner[mname]].append(module)
    return [
        BlockGroup(index=i, param_names=list(group), params=[params[n] for n in group], norm_modules=norms[i])
        for i, group in enumerate(names)
    ]
