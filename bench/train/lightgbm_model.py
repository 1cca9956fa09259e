"""A LightGBM model's text checked for structure before LightGBM parses it.

LightGBM's own parser aborts the whole process (exit 134) on a malformed model: a teacher cache
from elsewhere, altered and resealed with a matching manifest, used to end the suite with no
record and no message but LightGBM's. The seals catch accidental damage; this check catches a
model whose trees do not hold together, so it is a damaged cache (retrained, one warning), never
an abort. Checked per tree: the arrays of internal nodes hold num_leaves − 1 entries and the
leaves num_leaves, each a list of numbers where LightGBM reads numbers, every child index names a
node or leaf of the tree, every split feature one of the model's features; and each tree lies
exactly where the header's `tree_sizes` puts it, since LightGBM cuts the trees out by those sizes.
A change that keeps all of that (another number of the same form) is not caught: the seals are
what tells a model changed, this check only that LightGBM can parse it.
"""

from __future__ import annotations

from bench.core.sealed import DamagedCache

NODE_ARRAYS = ("split_feature", "threshold", "decision_type", "left_child", "right_child")
# The numeric arrays LightGBM writes for every tree of more than one leaf, per internal node and
# per leaf: a missing or unparsable one aborts its parser too.
NODE_NUMBERS = ("split_gain", "threshold", "internal_value", "internal_weight", "internal_count")
LEAF_NUMBERS = ("leaf_weight", "leaf_count")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_model_text(text: str) -> None:
    """Raise `DamagedCache` saying what is wrong when `text` is not a well-formed model."""
    header, found, _ = text.partition("\nTree=")
    fields = _fields(header)
    if not header.startswith("tree\n") or "max_feature_idx" not in fields or not found:
        raise DamagedCache("LightGBM model: no model header")
    features = _integer(fields["max_feature_idx"], "max_feature_idx") + 1
    sizes = [_integer(v, "tree_sizes") for v in fields.get("tree_sizes", "").split()]
    # LightGBM cuts the trees out by the byte sizes its header lists, before parsing them.
    data = text.encode()
    position = data.index(b"\nTree=") + 1
    for number, size in enumerate(sizes):
        block = data[position : position + size].decode(errors="replace")
        if not block.startswith(f"Tree={number}\n") or not block.endswith("\n\n\n"):
            raise DamagedCache(f"LightGBM model, tree {number}: not where tree_sizes puts it")
        _check_tree(_fields(block), number, features)
        position += size
    if not sizes or not data[position:].startswith(b"end of trees"):
        raise DamagedCache("LightGBM model: no 'end of trees' after the trees tree_sizes lists")


def _fields(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line)


def _integer(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DamagedCache(f"LightGBM model: {what} {value[:40]!r} is not an integer") from None


def _check_tree(fields: dict[str, str], number: int, features: int) -> None:
    where = f"LightGBM model, tree {number}"
    leaves = _integer(fields.get("num_leaves", ""), f"tree {number} num_leaves")
    if leaves < 1:
        raise DamagedCache(f"{where}: {leaves} leaves")
    values = fields.get("leaf_value", "").split()
    if len(values) != leaves or not all(map(_is_number, values)):
        raise DamagedCache(f"{where}: leaf_value does not hold {leaves} values")
    if leaves == 1:
        return
    arrays = {name: fields.get(name, "").split() for name in NODE_ARRAYS}
    for name, values in arrays.items():
        if len(values) != leaves - 1:
            raise DamagedCache(f"{where}: {name} does not hold {leaves - 1} values")
    for name in NODE_NUMBERS:
        values = fields.get(name, "").split()
        if len(values) != leaves - 1 or not all(map(_is_number, values)):
            raise DamagedCache(f"{where}: {name} is not {leaves - 1} numbers")
    for name in LEAF_NUMBERS:
        values = fields.get(name, "").split()
        if len(values) != leaves or not all(map(_is_number, values)):
            raise DamagedCache(f"{where}: {name} is not {leaves} numbers")
    children = [_integer(v, "child") for k in ("left_child", "right_child") for v in arrays[k]]
    if any(not -leaves <= child <= leaves - 2 for child in children):
        raise DamagedCache(f"{where}: a child index outside the tree")
    if any(not 0 <= _integer(v, "split_feature") < features for v in arrays["split_feature"]):
        raise DamagedCache(f"{where}: a split on a feature the model does not have")
