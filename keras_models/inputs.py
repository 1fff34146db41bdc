"""The model inputs of a batch: what training and evaluation feed a model, and what they keep as targets."""

from __future__ import annotations

__all__ = ["model_inputs"]


def model_inputs(batch: dict):
    """The model input of a batch: ``ids``, ``{"ids", "chars"}`` (tagging with characters) or
    ``{"source_ids", "target_in"}`` (seq2seq, whose ``target_out`` is the target).

    Example:

    >>> model_inputs({"ids": [[3, 4]], "tags": [[1, 2]]})
    [[3, 4]]
    >>> sorted(model_inputs({"source_ids": [[5]], "target_in": [[2]], "target_out": [[3]]}))
    ['source_ids', 'target_in']
    """
    if "source_ids" in batch:
        return {"source_ids": batch["source_ids"], "target_in": batch["target_in"]}
    return {"ids": batch["ids"], "chars": batch["chars"]} if "chars" in batch else batch["ids"]
