"""TerraSeg's Processing provider and algorithms (run engine jobs through plugin.worker_run).

One module per algorithm on the shared base (base.py): rasterise, train, predict,
evaluate, vectorise, areas, pseudo_label, review_labels; provider.py lists them.
"""

from .areas import AreaStatistics
from .base import TerraSegAlgorithm
from .evaluate import Evaluate
from .predict import Predict
from .provider import ALGORITHMS, TerraSegProvider
from .pseudo_label import PseudoLabels
from .rasterise import RasteriseLabels
from .review_labels import ReviewLabels
from .train import TrainModel
from .vectorise import Vectorise

__all__ = ["ALGORITHMS", "AreaStatistics", "Evaluate", "Predict", "PseudoLabels",
           "RasteriseLabels", "ReviewLabels",
           "TerraSegAlgorithm", "TerraSegProvider", "TrainModel", "Vectorise"]
