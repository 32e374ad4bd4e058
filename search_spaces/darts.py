"""The DARTS CNN cell space (Liu et al., ICLR 2019, Sec. 3.1): 8 ops, 4 nodes, 14 edges per cell."""

from nas.spaces import CellSpace, register_space

DARTS = register_space(
    CellSpace(
        name="darts",
        ops=(
            "none",
            "max_pool_3x3",
            "avg_pool_3x3",
            "skip_connect",
            "sep_conv_3x3",
            "sep_conv_5x5",
            "dil_conv_3x3",
            "dil_conv_5x5",
        ),
        num_nodes=4,
        edges_per_node=2,
        stem_multiplier=3,
    )
)
