"""The model folder: how a :class:`~tlseg.inference.model.Model` is saved and read.

A saved model is a folder:

- ``config.yaml``: ``format: 1``, the network and the preprocessing
  (:class:`~tlseg.config.ModelConfig` less its tuning);
- ``tuning.yaml``: the settings chosen after training on held-out images or taught ROIs
  (instance thresholds, diameter calibration, default and taught diameter), which
  :func:`tlseg.tune` rewrites;
- ``weights.pt``: a state dict, loaded with ``weights_only=True``;
- ``README.md`` (the model card) and ``card.yaml`` (its machine-readable facts).

A folder whose ``config.yaml`` has no ``format`` (tlseg 0.1: every setting in it) loads
too. Shipped models live in ``tlseg/models/<name>/`` inside the package; nothing is
downloaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import yaml

from ..config import ModelConfig
from ..errors import TlsegError
from ..io import atomic_path
from .network import UNet


def shipped_models() -> dict[str, Path]:
    """The models that ship inside the package (no download).

    Returns
    -------
    dict of str to Path
        Model name (``tl-cells``, ``nuclei``) to its folder.

    Examples
    --------
    >>> import tlseg
    >>> sorted(tlseg.shipped_models())
    ['nuclei', 'tl-cells']
    """
    root = Path(str(resources.files("tlseg") / "models"))
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.yaml").is_file()}


def read_folder(path) -> tuple[ModelConfig, UNet, dict]:
    """The settings, network and card of a model folder.

    Raises
    ------
    TlsegError
        The folder lacks ``config.yaml`` or ``weights.pt``, or they cannot be read.
    """
    path = Path(path)
    cfg_file, w_file = path / "config.yaml", path / "weights.pt"
    if not cfg_file.is_file() or not w_file.is_file():
        raise TlsegError(
            f"{path}: not a model folder (needs config.yaml and weights.pt); "
            "train one with `tlseg train` or name a shipped model"
        )
    tuning_file = path / "tuning.yaml"
    try:
        tuning = yaml.safe_load(tuning_file.read_text()) if tuning_file.is_file() else None
        config = ModelConfig.from_files(yaml.safe_load(cfg_file.read_text()), tuning)
        state = torch.load(w_file, map_location="cpu", weights_only=True)
        net = UNet(config.channels, config.n_outputs)
        net.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
        raise TlsegError(f"{path}: cannot load model ({str(exc).splitlines()[0]})") from None
    card_file = path / "card.yaml"
    card = yaml.safe_load(card_file.read_text()) if card_file.is_file() else {}
    return config, net, card


def write_folder(path, config: ModelConfig, net: torch.nn.Module, card: dict, *,
                 card_text: str | None = None) -> None:
    """Write ``config.yaml``, ``tuning.yaml``, ``weights.pt``, ``card.yaml`` and, with
    ``card_text``, ``README.md``, each atomically.

    >>> import tempfile
    >>> config = ModelConfig(channels=(8, 16))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_folder(d, config, UNet(config.channels, config.n_outputs), {"name": "x"})
    ...     read_folder(d)[2]
    {'name': 'x'}
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / "weights.pt") as tmp:
        torch.save(net.state_dict(), tmp)
    with atomic_path(path / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.to_files()[0], sort_keys=False))
    write_tuning(path, config, card)
    if card_text is not None:
        with atomic_path(path / "README.md") as tmp:
            tmp.write_text(card_text)


def write_tuning(path, config: ModelConfig, card: dict | None = None) -> None:
    """Rewrite a model folder's ``tuning.yaml`` (and ``card.yaml`` when ``card`` is
    given), atomically: what re-tuning changes."""
    path = Path(path)
    with atomic_path(path / "tuning.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.to_files()[1], sort_keys=False))
    if card is not None:
        with atomic_path(path / "card.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
