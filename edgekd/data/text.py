"""Text: sentences with labels, tokenized to fixed-length token rows (edgekd.data.tokens).

    text             a CSV/TSV/JSONL file with a text column and a label column (data.path), and
                     optionally a file of unlabelled sentences for the transfer set (data.transfer_path)
    movie-reviews    10,605 movie-review snippets rated by people from -4 to +4 (Hutto & Gilbert 2014,
                     VADER, MIT; from vaderSentiment's source distribution, fetched at set-up): rating
                     > 0 positive, < 0 negative (37 rated exactly 0 dropped). Transfer set: the
                     unlabelled tweets, NYT editorials and Amazon reviews of the same release (13,098)

Either source takes `transfer_copies: K`: K perturbed copies of every training sentence join the transfer
pool, for the teacher to label (Tang et al. 2019, "Distilling task-specific knowledge from BERT into
simple neural networks": masking and n-gram sampling). In-domain sentences are what a text transfer set
lacks; the test split never enters.

Inputs are token rows (N, 2, L) int64 (ids, attention mask); `RawData.notes` counts the sentences cut
to L tokens, and `RawData.text_test` keeps the test sentences for the bundle's validation inputs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np

from edgekd.data.checks import existing
from edgekd.data.source import DATASETS, RawData
from edgekd.data.split import stratified_holdout
from edgekd.data.table import class_ids, numbers, whole
from edgekd.data.tokens import pretrained_folder, special_ids, tokenize
from edgekd.errors import InputError

VADER = "vaderSentiment-3.3.2.tar.gz"
VADER_FETCH = "pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d {dir}"
_CORPUS = "hutto_ICWSM_2014/{}_GroundTruth.txt"
TRANSFER_CORPORA = ("tweets", "nytEditorialSnippets", "amazonReviewSnippets")
# a perturbed copy (`transfer_copies`): each token becomes [UNK] with this probability (Tang et al.'s
# p_mask) and, with this probability (their p_ng), the copy is cut to a span of 1..SPAN_TOKENS tokens
MASK_P, SPAN_P, SPAN_TOKENS = 0.1, 0.25, 8


def data_dir() -> Path:
    """Where set-up put the data packages: $EDGEKD_DATA_DIR, else the environment's share/edgekd."""
    return Path(os.environ.get("EDGEKD_DATA_DIR") or Path(sys.prefix) / "share" / "edgekd")


@DATASETS.register("movie-reviews")
def movie_reviews(path: Path | None = None, seed: int = 42, *, tokenizer: str = "all-minilm-l6-v2",
                  max_length: int = 64, transfer_copies: int = 0) -> RawData:
    sdist = Path(path) if path is not None else data_dir() / VADER
    if not sdist.is_file():
        raise InputError(f"{sdist}: the movie-review set is not here; set-up fetches it (`make venv`, or "
                         f"{VADER_FETCH.format(dir=sdist.parent)}), or point data.path at the file")
    corpora = _vader_corpora(sdist)
    scores, sentences = corpora["movieReviewSnippets"]
    keep = scores != 0
    texts = [s for s, k in zip(sentences, keep) if k]
    y = (scores[keep] > 0).astype(np.int64)
    unlabelled = [s for name in TRANSFER_CORPORA for s in corpora[name][1]]
    return _raw(texts, y, ("negative", "positive"), seed, tokenizer, max_length, unlabelled,
                {"dropped_neutral": int((~keep).sum())}, transfer_copies)


@DATASETS.register("text")
def text_table(path: Path | None = None, seed: int = 42, *, tokenizer: str = "all-minilm-l6-v2",
               max_length: int = 64, text_column: str = "text", label_column: str = "label",
               labels: list[str] | None = None, transfer_path: str | None = None,
               transfer_copies: int = 0) -> RawData:
    """A table of sentences and labels (.csv, .tsv, .jsonl); test rows are a stratified 20% holdout."""
    path = existing(path, "file", "text", "a .csv, .tsv or .jsonl file with text and label columns")
    rows = _read_rows(path)
    for r, row in rows:
        for col in (text_column, label_column):
            if col not in row:
                have = ", ".join(map(repr, row)) or "none"
                field = "text_column" if col == text_column else "label_column"
                raise InputError(f"{path}: no column {col!r} (row {r}; it has {have}); set data.{field} "
                                 "to the right one")
    texts = [str(row[text_column] if row[text_column] is not None else "") for _, row in rows]
    for (r, _), t in zip(rows, texts):
        if not t.strip():
            raise InputError(f"{path}: row {r} has an empty {text_column!r}; remove the row or fill it in")
    values = [str(row[label_column]).strip() if row[label_column] is not None else "" for _, row in rows]
    for (r, _), v in zip(rows, values):
        if not v:
            raise InputError(f"{path}: row {r} has no label (data.label_column {label_column!r} is empty); "
                             "fill it in or remove the row")
    if labels is not None:
        wanted = [str(v) for v in labels]
        twice = sorted({v for v in wanted if wanted.count(v) > 1})
        if twice:
            raise InputError(f"data.labels lists {', '.join(map(repr, twice))} more than once; give each "
                             "class once, in the order of the model's outputs")
        for (r, _), v in zip(rows, values):
            if v not in wanted:
                raise InputError(f"{path}: row {r} has label {v!r}, not in data.labels {wanted}; fix the "
                                 "row or add the label")
        unused = [v for v in wanted if v not in set(values)]
        if unused:
            raise InputError(f"{path}: no row has label {', '.join(map(repr, unused))} of data.labels; a "
                             "class with no rows would be trained as one: drop it from data.labels")
        y, names = np.array([wanted.index(v) for v in values], np.int64), tuple(wanted)
    else:
        y, names = _classes(values, path, label_column)
    unlabelled = _read_sentences(Path(transfer_path)) if transfer_path else None
    return _raw(texts, y, names, seed, tokenizer, max_length, unlabelled, {}, transfer_copies)


def _classes(values: list[str], path: Path, label_column: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels read as text -> (ids, class names). Whole numbers (JSON 1 and "1.0" alike) are classes in
    numeric order: the ids themselves when they are 0..C-1, else named by their value (star ratings 1..5,
    -1/0/1), where sorting them as text put 10 before 2; any other labels are names, sorted."""
    nums = numbers(values)
    if nums is None or not all(whole(n) for n in nums):
        return class_ids(values, path, label_column)  # names (1.5 stars is a name like any other)
    ints = [int(n) for n in nums]
    order = sorted(set(ints))
    if order == list(range(len(order))) or len(order) < 2:  # ids; or one class, which class_ids refuses
        return class_ids(ints, path, label_column)
    index = {v: i for i, v in enumerate(order)}
    return np.array([index[v] for v in ints], np.int64), tuple(str(v) for v in order)


def _raw(texts: list[str], y: np.ndarray, names: tuple[str, ...], seed: int, tokenizer: str, max_length: int,
         unlabelled: list[str] | None, notes: dict, copies: int = 0) -> RawData:
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 0:
        raise InputError(f"data.transfer_copies is {copies!r}; give a count of perturbed copies of each "
                         "training sentence for the transfer set (0: none)")
    folder = pretrained_folder(tokenizer, "data.tokenizer")
    train, test = stratified_holdout(y, seed)
    tok = tokenize(texts, folder, max_length)
    notes = {**notes, "sentences": len(texts), "truncated": tok.truncated, "max_length": max_length,
             "tokenizer": str(folder)}
    parts = []
    if unlabelled:
        pool = tokenize(unlabelled, folder, max_length)
        notes["transfer_pool"], notes["transfer_truncated"] = len(unlabelled), pool.truncated
        parts.append(pool.x)
    if copies:
        parts.append(perturbed_copies(tok.x[train], copies, seed, special_ids(folder)))
        notes["transfer_copies"] = len(parts[-1])
    sample = None
    if parts:
        rows = np.concatenate(parts)

        def sample(n: int, seed: int) -> np.ndarray:
            """`n` unlabelled sentences (repeating the pool in a seeded order when n exceeds it)."""
            order = np.concatenate([np.random.default_rng(seed + k).permutation(len(rows))
                                    for k in range(-(-n // len(rows)))])
            return rows[order[:n]]
        sample.fingerprint = f"text-transfer-{len(rows)}-{hash_rows(rows)}"
    return RawData(tok.x[train], y[train], tok.x[test], y[test], tuple(names), sample, notes=notes,
                   text_test=tuple(texts[i] for i in test))


def perturbed_copies(x: np.ndarray, copies: int, seed: int, special: dict[str, int]) -> np.ndarray:
    """`copies` perturbed copies of each token row (N, 2, L): every token between [CLS] and [SEP] becomes
    [UNK] with probability MASK_P, and a copy is cut, with probability SPAN_P, to a random span of 1 to
    SPAN_TOKENS of its tokens (wrapped in [CLS] ... [SEP] again, the rest padding). The training rows only:
    the test split never enters."""
    rng = np.random.default_rng([seed, 1_000_033])
    length = x.shape[2]
    out = np.zeros((copies * len(x), 2, length), np.int64)
    out[:, 0] = special["pad"]
    for k in range(len(out)):
        row = x[k % len(x)]
        n = int(row[1].sum())
        # the tokens between [CLS] and [SEP]; a tokenizer that adds neither: all of them
        wrapped = n >= 2 and row[0, 0] == special["cls"] and row[0, n - 1] == special["sep"]
        body = row[0, 1:n - 1].copy() if wrapped else row[0, :n].copy()
        if len(body) and rng.random() < SPAN_P:
            size = int(rng.integers(1, min(SPAN_TOKENS, len(body)) + 1))
            start = int(rng.integers(0, len(body) - size + 1))
            body = body[start:start + size]
        body[rng.random(len(body)) < MASK_P] = special["unk"]
        ids = np.concatenate([[special["cls"]], body, [special["sep"]]]) if wrapped else body
        out[k, 0, :len(ids)], out[k, 1, :len(ids)] = ids, 1
    return out


def hash_rows(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def _vader_corpora(sdist: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    """{corpus: (mean ratings, sentences)} from the sdist's nested hutto_ICWSM_2014.tar.gz (latin-1)."""
    try:
        with tarfile.open(sdist) as outer:
            member = next((m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz")), None)
            if member is None:
                raise InputError(f"{sdist}: no additional_resources/hutto_ICWSM_2014.tar.gz inside; "
                                 "fetch the source distribution again "
                                 f"({VADER_FETCH.format(dir=sdist.parent)})")
            inner = tarfile.open(fileobj=io.BytesIO(outer.extractfile(member).read()))
            out = {}
            for name in ("movieReviewSnippets", *TRANSFER_CORPORA):
                text = inner.extractfile(_CORPUS.format(name)).read().decode("latin-1")
                scores, sentences = [], []
                for line in text.splitlines():
                    parts = line.split("\t")
                    if len(parts) >= 3 and parts[2].strip():
                        scores.append(float(parts[1]))
                        sentences.append(parts[2].strip())
                out[name] = (np.array(scores), sentences)
            return out
    except (tarfile.TarError, KeyError, OSError, ValueError, EOFError) as e:
        raise InputError(f"{sdist}: not a readable vaderSentiment 3.3.2 source distribution ({e}); fetch it "
                         f"again ({VADER_FETCH.format(dir=sdist.parent)})") from None


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """[(line number, {column: value})] from .jsonl (one object a line) or .csv/.tsv (a header row)."""
    try:
        if path.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{path}: line {n} is not JSON ({e.msg}); "
                                         "one object per line") from None
                    if not isinstance(row, dict):
                        raise InputError(f"{path}: line {n} is not a JSON object; one object per line")
                    rows.append((n, row))
        else:
            delimiter = "\t" if path.suffix in (".tsv", ".tab") else ","
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f, delimiter=delimiter)
                rows = [(reader.line_num, dict(r)) for r in reader
                        if any((v or "").strip() for v in r.values())]
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise InputError(f"{path}: not a readable table ({e})") from None
    if not rows:
        raise InputError(f"{path}: no rows; give one sentence and label per row")
    return rows


def _read_sentences(path: Path) -> list[str]:
    """Unlabelled sentences, one a line (blank lines skipped)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (data.transfer_path); give a text file, one sentence a line")
    try:
        sentences = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
    if not sentences:
        raise InputError(f"{path}: no sentences (data.transfer_path); give one unlabelled sentence a line, "
                         "or drop data.transfer_path")
    return sentences
