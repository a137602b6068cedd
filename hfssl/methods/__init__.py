"""Pretraining methods: one ``nn.Module`` per method whose ``forward`` returns an output with ``.loss``.

Text: :mod:`.bert` (MLM + NSP, with its eval step). Images: :mod:`.mae` (with its export to a plain ViT),
and the contrastive / self-distillation family :mod:`.simclr`, :mod:`.moco`, :mod:`.byol` built on
:mod:`.contrastive`. Recipes (``recipes/``) assemble them with data and the training loop.
"""

from __future__ import annotations


def contrastive_methods() -> dict[str, type]:
    """The methods ``recipes/contrastive.py`` trains, by the name a config's ``method:`` key gives
    (imported on demand, so text recipes never load the vision modules)."""
    from hfssl.methods.byol import BYOL
    from hfssl.methods.moco import MoCo
    from hfssl.methods.simclr import SimCLR

    return {"simclr": SimCLR, "moco": MoCo, "byol": BYOL}
