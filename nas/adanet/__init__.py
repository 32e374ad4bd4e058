"""AdaNet (Cortes et al., ICML 2017): an ensemble grown one subnetwork per iteration.

`nas grow` runs it; see docs/adanet.md. The extension point is `SubnetworkGenerator` with the
`GENERATORS` registry; `load_ensemble(run_dir)` rebuilds a grown ensemble for inference.
"""

from nas.adanet.ensemble import Ensemble, load_ensemble, objective, validate_ensemble
from nas.adanet.generators import GENERATORS, DataShape, Subnetwork, SubnetworkGenerator

__all__ = [
    "GENERATORS",
    "DataShape",
    "Ensemble",
    "Subnetwork",
    "SubnetworkGenerator",
    "load_ensemble",
    "objective",
    "validate_ensemble",
]
