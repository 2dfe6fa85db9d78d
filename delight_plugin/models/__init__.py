"""Every module in this folder is imported, so that its fairseq registrations take effect.

fairseq's `--user-dir` also imports this folder by file; both routes import each module once.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
