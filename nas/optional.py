"""Optional dependencies: imported where they are used, with one message that says how to install.

Each optional package belongs to an extra of the `nasforge` distribution (pyproject.toml):
matplotlib to `plot`, optuna to `hpo`, onnxscript and onnxruntime to `onnx`, torchvision to
`vision`, mnist1d (which generates MNIST-1D) to `mnist1d`; Pillow, a dependency imported only to
read image folders, to `images` as well. `import nas` never imports them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nas.errors import NasError

# The extra of the nasforge distribution that installs each optional package.
EXTRAS = {
    "matplotlib": "plot",
    "optuna": "hpo",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "torchvision": "vision",
    "mnist1d": "mnist1d",
    "PIL": "images",
}


def optional_import(name: str, purpose: str) -> ModuleType:
    """Import the optional package `name` (a key of `EXTRAS`), which `purpose` needs.

    Returns:
        The module.

    Raises:
        NasError: "PURPOSE needs NAME: install the EXTRA extra: pip install 'nasforge[EXTRA]'"
            when it is missing; when it is installed but fails to import (a broken or mismatched
            install, as torchvision against another torch), the message carries that error.
    """
    extra = EXTRAS[name]
    install = f"install the {extra} extra: pip install 'nasforge[{extra}]'"
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if err.name == name:  # the package itself is missing, not one of its own imports
            raise NasError(f"{purpose} needs {name}: {install}") from None
        failure: Exception = err
    except Exception as err:  # a package may fail on import with any error, not only be missing
        failure = err
    message = (str(failure).splitlines() or [""])[0][:200]
    raise NasError(
        f"{purpose} needs {name}, which fails to import ({type(failure).__name__}: {message}): "
        f"reinstall it, or {install}"
    )
