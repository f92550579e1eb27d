"""Package discovery for setuptools; all other metadata lives in pyproject.toml.

pyproject.toml maps the repo-root folders ``integrations/`` and ``contrib/`` onto the import
paths ``dfcore.integrations`` and ``dfcore.contrib``. ``[tool.setuptools.packages.find]`` cannot
rename what it finds, so the package list is built here from the same folders.
"""

from setuptools import find_packages, setup

_ROOTS = {"dfcore": "dfcore", "dfcore.integrations": "integrations", "dfcore.contrib": "contrib"}


def _packages() -> list[str]:
    found: list[str] = []
    for name, folder in _ROOTS.items():
        found.append(name)
        # find_packages() does not recurse into folders mapped to another root, so
        # dfcore/ never lists integrations/ or contrib/ twice.
        found += [f"{name}.{sub}" for sub in find_packages(folder, exclude=["tests", "tests.*"])]
    return found


setup(packages=_packages())
