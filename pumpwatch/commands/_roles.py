"""Which extra installs a command's role, and the one line a missing one becomes.

pumpwatch installs by role (``pip install 'pumpwatch[edge]'``, ``[cloud]``,
``[models]``, ``[all]``): the core (dsp, simulator, the CLI) needs only numpy,
scipy, msgspec and zstandard, and each command imports its role's libraries
when it runs. A command module says what it needs with a module-level
``ROLE = Role(extra, modules)``; :mod:`pumpwatch.cli` checks ``modules`` (by
finding them, not importing them) before it parses that command's arguments,
so ``pumpwatch cloud --help`` on a gateway exits 2 with one line naming the
extra while ``pumpwatch --help`` still lists every command. Anything else a
command imports later (``--sagemaker``'s boto3, the PostgreSQL store's
asyncpg) is reported the same way when its ``ModuleNotFoundError`` reaches the
CLI.

Only a module this file knows as a role's third-party dependency, and that is
really not installed, is reported this way: a missing module of our own, a
typo, or a broken installed library stays a traceback.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

ALL = "all"

# Top-level import name -> the extras that install it (pyproject.toml's
# [project.optional-dependencies]; awscrt comes with awsiotsdk). The first is
# named when the command's own role is not among them.
PROVIDED_BY: dict[str, tuple[str, ...]] = {
    "paho": ("edge", "cloud"),
    "awsiot": ("edge",),
    "awscrt": ("edge",),
    "aiobotocore": ("cloud",),
    "asyncpg": ("cloud",),
    "cryptography": ("cloud",),
    "botocore": ("cloud", "models"),
    "boto3": ("cloud", "models"),
    "aiohttp": ("cloud", "models"),
    "sklearn": ("models",),
    "prometheus_client": ("cloud", "models"),
}


@dataclass(frozen=True)
class Role:
    """A command's role: the extra that installs it, and the modules the command always needs.

    ``modules`` are checked before the command's arguments are parsed; list only
    what every use of the command imports (``pumpwatch models`` on a local
    registry needs no boto3, so ``models`` lists nothing and ``--sagemaker``
    reports boto3 when it imports it).
    """

    extra: str
    modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [m for m in self.modules if m not in PROVIDED_BY]
        if unknown:
            raise ValueError(f"modules {unknown} are no role's dependency (see PROVIDED_BY)")

    def missing(self) -> str | None:
        """The first of ``modules`` that is not installed, or None."""
        return next((m for m in self.modules if not installed(m)), None)


def installed(module: str) -> bool:
    """Whether top-level ``module`` can be imported (found on the path; not imported)."""
    return importlib.util.find_spec(module) is not None


def extra_for(module: str, role: str | None) -> str | None:
    """The extra to install for missing top-level ``module`` in a command of ``role``."""
    extras = PROVIDED_BY.get(module)
    if not extras:
        return None
    if role is not None and (role == ALL or role in extras):
        return role
    return extras[0]


def missing_dependency(exc: ModuleNotFoundError) -> str | None:
    """The role dependency ``exc`` is about, if it is one and it really is not installed.

    ``exc.name`` is the first module on the dotted path that could not be found,
    so a missing package reports its top-level name. A missing submodule of an
    installed package (a broken or mismatched install), a module of our own or
    any name not in :data:`PROVIDED_BY` gives None: that is a bug to see, not an
    extra to install.
    """
    name = exc.name
    if name is None or name not in PROVIDED_BY or installed(name):
        return None
    return name


def missing_extra_line(prog: str, module: str, role: str | None) -> str:
    """``pumpwatch cloud needs the 'cloud' extra: pip install 'pumpwatch[cloud]' (...)``.

    ``prog`` is the command as typed (``pumpwatch cloud``), ``module`` the missing
    top-level module and ``role`` the command's own extra, if it has one.
    """
    extra = extra_for(module, role) or ALL
    return (
        f"{prog} needs the '{extra}' extra: pip install 'pumpwatch[{extra}]' "
        f"(no module named {module!r})"
    )
