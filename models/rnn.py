"""Recurrent networks over a short sequence of frames (HW2's window around each frame)."""

from typing import Literal

import torch
from torch import nn


class WindowRNN(nn.Module):
    """A bidirectional LSTM/GRU over each window; the centre frame's output (which has seen the
    whole window from both sides) goes through a BatchNorm + Dropout head to the class logits."""

    def __init__(self, in_features: int, out_features: int, cell: Literal["lstm", "gru"] = "lstm",
                 hidden_dim: int = 256, num_layers: int = 3, dropout: float = 0.0, batch_norm: bool = True) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(in_features, hidden_dim, num_layers, batch_first=True, bidirectional=True,
                       dropout=dropout if num_layers > 1 else 0.0)
        head: list[nn.Module] = [nn.BatchNorm1d(2 * hidden_dim)] if batch_norm else []
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        self.head = nn.Sequential(*head, nn.Linear(2 * hidden_dim, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, frames, features) -> (B, out_features), from the centre frame."""
        outputs, _ = self.rnn(x)
        return self.head(outputs[:, x.shape[1] // 2])
