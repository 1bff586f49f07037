"""Sample inputs for calibration.

Accepted: an object following onnxruntime.quantization's
CalibrationDataReader protocol (get_next() returns a feed dict, then None),
an .npz whose arrays are named after the model's inputs with samples along
the first axis, an .npz of batches NAME_0, NAME_1, ... as `onnxbit verify
--inputs` reads them (each batch's samples along its first axis; batches may
differ in their other dimensions), or a folder of such .npz files. Samples are split
deterministically: every `holdout_every`-th sample is held out for the final
check of the budget, the rest calibrate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from onnxbit.errors import ConfigError


@dataclass
class CalibrationData:
    calibration: list[dict[str, np.ndarray]]  # one feed per sample (batch of 1)
    holdout: list[dict[str, np.ndarray]]

    @property
    def samples(self) -> int:
        return len(self.calibration) + len(self.holdout)


def load_calibration_data(source: Any, input_names: Sequence[str], samples: int | None = None,
                          holdout_every: int = 5) -> CalibrationData:
    feeds = _feeds(source, list(input_names))
    if samples is not None:
        feeds = feeds[:samples]
    if len(feeds) < 2:
        raise ConfigError(f"calibration needs at least 2 samples (one to calibrate, one held out); got {len(feeds)}")
    if len(feeds) < holdout_every:  # too few for the rule: hold out the last one
        return CalibrationData(feeds[:-1], feeds[-1:])
    held = [i % holdout_every == holdout_every - 1 for i in range(len(feeds))]
    return CalibrationData([f for f, h in zip(feeds, held) if not h], [f for f, h in zip(feeds, held) if h])


def _feeds(source: Any, names: list[str]) -> list[dict[str, np.ndarray]]:
    if hasattr(source, "get_next"):  # a CalibrationDataReader
        feeds = []
        while (feed := source.get_next()) is not None:
            _check_names(feed, names, "the data reader's feed")
            feeds.append({name: np.asarray(feed[name]) for name in names})
        return feeds
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.glob("*.npz"))
            if not files:
                raise ConfigError(f"calibration data folder {path} holds no .npz files")
            return [feed for file in files for feed in _npz_feeds(file, names)]
        if path.is_file():
            return _npz_feeds(path, names)
        raise ConfigError(f"calibration data {path} does not exist")
    raise ConfigError(f"calibration data must be an .npz path, a folder of them or a CalibrationDataReader, "
                      f"got {type(source).__name__}")


def _npz_feeds(path: Path, names: list[str]) -> list[dict[str, np.ndarray]]:
    try:
        data = np.load(path)
        keys = set(data.files)
    except Exception as exc:  # numpy raises several kinds for a bad file
        raise ConfigError(f"{path} is not a readable .npz file: {exc}") from None
    if not all(name in keys for name in names) and any(f"{name}_0" in keys for name in names):
        from onnxbit.feeds import FeedError, load_feeds

        try:
            batches = load_feeds(path, names)
        except FeedError as exc:
            raise ConfigError(str(exc)) from None
        return [sample for index, batch in enumerate(batches)
                for sample in _samples(batch, names, f"{path} (batch {index})")]
    _check_names(keys, names, str(path))
    return _samples({name: data[name] for name in names}, names, str(path))


def _samples(arrays: dict[str, np.ndarray], names: list[str], where: str) -> list[dict[str, np.ndarray]]:
    """One feed per index of the inputs' first axis."""
    counts = {name: arrays[name].shape[0] if arrays[name].ndim else 0 for name in names}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ConfigError(f"{where}: every input needs the same number of samples along axis 0, got {counts}")
    count = next(iter(counts.values()))
    return [{name: arrays[name][i:i + 1] for name in names} for i in range(count)]


def _check_names(feed, names: list[str], where: str) -> None:
    missing = [n for n in names if n not in feed]
    if missing:
        raise ConfigError(f"{where} lacks the model inputs {missing}; it has {sorted(feed)} (expected arrays named "
                          f"after the inputs, or batches NAME_0, NAME_1, ...)")
