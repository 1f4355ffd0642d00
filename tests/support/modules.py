"""Loading a module from its file, without putting its directory on ``sys.path``."""

import importlib.util


def load_module(name, path):
    """Execute the Python file at ``path`` as a new module called ``name``; return the module.

    For a file whose directory must not shadow other imports (the vendored
    pytest plugin) or is no package on the path (the docs' extensions).
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
