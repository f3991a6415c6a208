"""Plain nn.Module networks, kept apart from the training logic so they can be swapped from config."""

from torch import nn


class MLP(nn.Sequential):
    """Fully connected net: Linear → [BatchNorm] → ReLU → [Dropout] per hidden layer, then a Linear head."""

    def __init__(self, in_features: int, hidden_dims: list[int], out_features: int = 1,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        if any(width < 1 for width in hidden_dims):  # (a layer of 0 units trains a constant, silently)
            raise ValueError(f"hidden layer widths must be at least 1, got {list(hidden_dims)}")
        layers: list[nn.Module] = []
        for width in hidden_dims:
            layers.append(nn.Linear(in_features, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = width
        layers.append(nn.Linear(in_features, out_features))
        super().__init__(*layers)
