"""A tiny cell space for fast tests and smoke runs: 4 cheap ops, 2 nodes, 5 edges per cell."""

from nas.spaces import CellSpace, register_space

TINY = register_space(
    CellSpace(
        name="tiny",
        ops=("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"),
        num_nodes=2,
        edges_per_node=2,
        stem_multiplier=1,
    )
)
