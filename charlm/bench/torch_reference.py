"""The reference model in PyTorch (CPU), trained and sampled the way its users would:
what charlm's rates are compared with in the same run. Absent when torch is not
installed; its threads are set to TensorFlow's."""

from __future__ import annotations

import time
from pathlib import Path

from charlm.bench.reference import (
    REFERENCE,
    VALIDATION_CHARS,
    VOCAB_CHARS,
    chars_per_step,
    evaluation_rows,
)

VOCAB = VOCAB_CHARS + 1


def importable_torch(threads: int):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def reference_model(torch, cell: str):
    torch.manual_seed(0)
    layer = {"simple_rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    return torch.nn.ModuleDict(
        dict(
            embedding=torch.nn.Embedding(VOCAB, REFERENCE["embedding_dim"]),
            rnn=layer(
                REFERENCE["embedding_dim"],
                REFERENCE["units"],
                REFERENCE["layers"],
                batch_first=True,
            ),
            logits=torch.nn.Linear(REFERENCE["units"], VOCAB),
        )
    )


class TorchTraining:
    """One training step of the reference model (Adam, clip 5), and a whole segment:
    steps, an evaluation of VALIDATION_CHARS in charlm's batches, a checkpoint written to
    disk."""

    def __init__(self, torch, cell: str):
        self.torch, self.cell, self.model = torch, cell, None

    def warm_up(self):
        """Built and stepped twice on first use, not before: charlm compiles its model
        before PyTorch first runs (see charlm.bench.training)."""
        torch = self.torch
        self.model = reference_model(torch, self.cell)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=2e-3)
        batch, length = REFERENCE["batch_size"], REFERENCE["seq_length"]
        self.tokens = torch.randint(0, VOCAB, (batch, length + 1))
        self.validation_tokens = torch.randint(0, VOCAB, (evaluation_rows(), length + 1))
        for _ in range(2):
            self.train_step()

    def loss(self, tokens):
        hidden, _ = self.model["rnn"](self.model["embedding"](tokens[:, :-1]))
        logits = self.model["logits"](hidden).reshape(-1, VOCAB)
        return self.torch.nn.functional.cross_entropy(logits, tokens[:, 1:].reshape(-1))

    def step(self):
        if self.model is None:
            self.warm_up()
        self.train_step()

    def train_step(self):
        loss = self.loss(self.tokens)
        self.optimizer.zero_grad()
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()

    def segment_rate(self, steps: int, checkpoint: Path) -> float:
        if self.model is None:
            self.warm_up()
        started = time.perf_counter()
        for _ in range(steps):
            self.train_step()
        with self.torch.no_grad():
            rows, length = self.validation_tokens.shape
            for _ in range(VALIDATION_CHARS // (rows * (length - 1))):
                self.loss(self.validation_tokens)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        self.torch.save(state, checkpoint)
        return steps * chars_per_step() / (time.perf_counter() - started)


def torch_sampling_chars_per_s(torch, streams: int, length: int, onednn: bool) -> float:
    """PyTorch's carried-state sampler on the reference LSTM: nn.LSTM one step at a time
    with its state carried, softmax at temperature 0.8, multinomial; oneDNN (mkldnn) on,
    PyTorch's default, or off."""
    model = reference_model(torch, "lstm").eval()
    with torch.backends.mkldnn.flags(enabled=onednn), torch.inference_mode():

        def run(count):
            tokens, state = torch.zeros((streams, 1), dtype=torch.long), None
            for _ in range(count):
                hidden, state = model["rnn"](model["embedding"](tokens), state)
                probs = torch.softmax(model["logits"](hidden[:, -1]) / 0.8, dim=-1)
                tokens = torch.multinomial(probs, 1)

        run(20)
        started = time.perf_counter()
        run(length)
        return streams * length / (time.perf_counter() - started)
