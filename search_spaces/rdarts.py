"""The reduced DARTS spaces in which Zela et al. ("Understanding and Robustifying Differentiable
Architecture Search", ICLR 2020, Sec. 3) showed DARTS collapsing to skip connections: the DARTS
cell (4 nodes, 14 edges) with two or three candidate ops per edge. Cheap to search, and the
benchmark for the collapse diagnostics and guards (docs/collapse.md).
"""

from nas.spaces import CellSpace, register_space

# S2: a convolution against the identity on every edge.
RDARTS_S2 = register_space(CellSpace(name="rdarts_s2", ops=("skip_connect", "sep_conv_3x3")))
# S3: S2 plus the zero op.
RDARTS_S3 = register_space(
    CellSpace(name="rdarts_s3", ops=("none", "skip_connect", "sep_conv_3x3"))
)
