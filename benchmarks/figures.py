"""Small helpers the benchmarks share."""

import math
from typing import Any


def nan_to_none(value: Any) -> Any:
    """NaN is not JSON: a figure that could not be taken is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value
