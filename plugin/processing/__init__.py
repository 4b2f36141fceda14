"""TerraSeg's Processing provider and algorithms (run engine jobs through plugin.worker)."""

from .algorithms import (
    ALGORITHMS,
    AreaStatistics,
    Evaluate,
    Predict,
    RasteriseLabels,
    TerraSegAlgorithm,
    TrainModel,
    Vectorise,
)
from .provider import TerraSegProvider

__all__ = ["ALGORITHMS", "AreaStatistics", "Evaluate", "Predict", "RasteriseLabels",
           "TerraSegAlgorithm", "TerraSegProvider", "TrainModel", "Vectorise"]
