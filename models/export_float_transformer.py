"""Export a float BERT-style encoder (MiniLM-sized: hidden 384, 6 layers, 12
heads, intermediate 1536, vocab 30522) to ONNX, for measuring what each
preset and target does to a float transformer's speed
(`onnxbit bench model`).

Random weights: nothing loads weights from a hub here, and speed does not
depend on the values. The export keeps batch and sequence dynamic.

    pip install torch==2.13.0 transformers  # the [export] extra
    python models/export_float_transformer.py /tmp/minilm.onnx
    onnxbit quantize /tmp/minilm.onnx /tmp/minilm.int8.onnx --preset int8 --target ort
    onnxbit bench model /tmp/minilm.onnx /tmp/minilm.int8.onnx
"""

from __future__ import annotations

import argparse

import torch
from transformers import BertConfig, BertModel


class Encoder(torch.nn.Module):
    """input_ids, attention_mask -> last_hidden_state (positional inputs for the exporter)."""

    def __init__(self, bert: BertModel):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--layers", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = BertConfig(hidden_size=384, num_hidden_layers=args.layers, num_attention_heads=12,
                        intermediate_size=1536, vocab_size=30522, max_position_embeddings=512)
    model = Encoder(BertModel(config).eval()).eval()
    ids = torch.randint(0, config.vocab_size, (1, 16))
    mask = torch.ones_like(ids)
    torch.onnx.export(model, (ids, mask), args.output, input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                    "attention_mask": {0: "batch", 1: "sequence"},
                                    "last_hidden_state": {0: "batch", 1: "sequence"}})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
