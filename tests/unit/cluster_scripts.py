"""The cluster side's stdlib scripts (roles/gateway/files: hpcgw-gate,
hpcgw-job) have no .py suffix: load one as a module, for tests that call
its functions directly."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import pathlib
import types


def load_script(path: pathlib.Path, name: str) -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
