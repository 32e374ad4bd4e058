"""Built-in search spaces. Every module here is imported on first lookup and registers its spaces.

To add a space, add one file here that calls `nas.spaces.register_space(CellSpace(...))`.
"""
