"""The local model registry: a directory and a small JSON index, in SageMaker's vocabulary.

Layout under the registry root::

    index.json                                   the index (atomic rewrite under a lock)
    artifacts/{group}/{version}/model.tar.gz      registered artifacts (immutable)
    cache/{sha256}/                               extracted bundles (for the server)

Vocabulary (as in the SageMaker Model Registry): a *model package group*
holds versioned *model packages* (1, 2, ...); each has a
``ModelApprovalStatus`` -- ``PendingManualApproval`` on registration,
then ``Approved`` or ``Rejected`` -- ``ModelMetrics`` (here a flat dict of
numbers), ``CustomerMetadataProperties`` (str -> str), an artifact URI and
its SHA-256, checked again whenever the artifact is loaded.

A *deployment* points an endpoint name at one approved package (production)
and, during a rollout, a candidate beside it (shadow or canary; see
:mod:`models.registry.rollout`); a running server polls its deployment (and
reloads on SIGHUP) and swaps bundles without dropping requests. Every change
of a deployment is appended to the index's ``history`` (who, when, from, to, why).
:class:`ModelRegistry` is the interface (and :class:`~models.registry.rollout.RolloutRegistry`
its rollout half); the SageMaker-backed implementation is in :mod:`models.registry.sagemaker`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from models.serving.bundle import (
    MANIFEST,
    Bundle,
    load_bundle,
    pack_bundle,
    read_manifest,
    sha256_file,
)
from models.serving.errors import ChecksumMismatchError, RegistryError
from models.serving.statistics import STATISTICS_FILE

from .rollout import (
    Action,
    Candidate,
    HistoryEntry,
    RolloutLimits,
    RolloutMode,
    check_rollout,
    who,
)

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
APPROVAL_STATUSES: tuple[str, ...] = ("PendingManualApproval", "Approved", "Rejected")
_GROUP_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def check_group_name(name: str) -> None:
    if not _GROUP_RE.match(name):
        raise RegistryError(
            f"invalid model package group name {name!r}: 1-63 letters, digits and "
            "single hyphens, starting and ending with a letter or digit"
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class ModelPackage:
    group: str
    version: int
    status: ApprovalStatus
    artifact_uri: str
    sha256: str
    metrics: dict[str, float] = field(default_factory=dict)
    customer_metadata: dict[str, str] = field(default_factory=dict)
    description: str = ""
    approval_description: str = ""
    created: str = ""
    arn: str = ""

    @property
    def model_version(self) -> str:
        """What results report as ``model_version``: ``{group}/{version}``."""
        return f"{self.group}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_version"] = self.model_version
        return d


@dataclass(frozen=True, kw_only=True)
class Deployment:
    endpoint: str
    group: str
    version: int
    deployed: str = ""
    candidate: Candidate | None = None  # on trial beside production (shadow or canary)

    @property
    def model_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def candidate_version(self) -> str | None:
        return None if self.candidate is None else f"{self.group}/{self.candidate.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint, "group": self.group, "version": self.version,
            "model_version": self.model_version, "deployed": self.deployed,
            "candidate": None if self.candidate is None else {
                **self.candidate.to_dict(), "model_version": self.candidate_version},
        }


class ModelRegistry(Protocol):
    """What both registries (local directory, SageMaker) offer."""

    def create_group(self, group: str, description: str = "") -> None: ...

    def register(
        self,
        group: str,
        artifact: Path,
        *,
        metrics: Mapping[str, float] | None = None,
        customer_metadata: Mapping[str, str] | None = None,
        description: str = "",
    ) -> ModelPackage: ...

    def list_packages(
        self, group: str, status: ApprovalStatus | None = None
    ) -> list[ModelPackage]: ...

    def describe(self, group: str, version: int) -> ModelPackage: ...

    def set_status(
        self, group: str, version: int, status: ApprovalStatus, description: str = ""
    ) -> ModelPackage: ...

    def latest_approved(self, group: str) -> ModelPackage: ...

    def deploy(self, group: str, endpoint: str, version: int | None = None) -> Deployment: ...


class LocalRegistry:
    """A :class:`ModelRegistry` over a directory (no server; safe across processes)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- index --------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def _read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return {"format": "pumpwatch-registry", "version": 1, "groups": {}, "deployments": {}}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read registry index {self.index_path}: {exc}") from None
        return data

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".index-", dir=self.root)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.index_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write the index under an exclusive file lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read()
                yield data
                self._write(data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _group(self, data: dict[str, Any], group: str) -> dict[str, Any]:
        g = data["groups"].get(group)
        if g is None:
            known = ", ".join(sorted(data["groups"])) or "none"
            raise RegistryError(f"no model package group {group!r} (groups: {known})")
        return g

    def _package(self, group: str, p: Mapping[str, Any]) -> ModelPackage:
        return ModelPackage(
            group=group,
            version=int(p["version"]),
            status=p["status"],
            artifact_uri=(self.root / p["artifact"]).resolve().as_uri(),
            sha256=p["sha256"],
            metrics=dict(p.get("metrics", {})),
            customer_metadata=dict(p.get("customer_metadata", {})),
            description=p.get("description", ""),
            approval_description=p.get("approval_description", ""),
            created=p.get("created", ""),
            arn=f"local:model-package/{group}/{p['version']}",
        )

    # --- groups -------------------------------------------------------------------
    def create_group(self, group: str, description: str = "") -> None:
        check_group_name(group)
        with self._locked() as data:
            data["groups"].setdefault(
                group, {"description": description, "created": _now(), "packages": []}
            )

    def list_groups(self) -> list[str]:
        return sorted(self._read()["groups"])

    # --- packages -----------------------------------------------------------------
    def register(
        self,
        group: str,
        artifact: Path,
        *,
        metrics: Mapping[str, float] | None = None,
        customer_metadata: Mapping[str, str] | None = None,
        description: str = "",
    ) -> ModelPackage:
        """Copy a bundle (directory or ``model.tar.gz``) in as the group's next version.

        The group is created if missing. The new package is ``PendingManualApproval``.
        """
        check_group_name(group)
        artifact = Path(artifact)
        staging = Path(tempfile.mkdtemp(prefix=".register-", dir=self._ensure_root()))
        try:
            tar = staging / "model.tar.gz"
            if artifact.is_dir():
                read_manifest(artifact)
                pack_bundle(artifact, tar)
            elif artifact.is_file():
                shutil.copyfile(artifact, tar)
            else:
                raise RegistryError(f"no artifact at {artifact}")
            # Prove it loads before it is registered (and fail here, not at deploy).
            load_bundle(tar, cache_dir=self.root / "cache")
            digest = sha256_file(tar)
            mets = {str(k): float(v) for k, v in (metrics or {}).items()}
            meta = {str(k): str(v) for k, v in (customer_metadata or {}).items()}
            with self._locked() as data:
                g = data["groups"].setdefault(
                    group, {"description": "", "created": _now(), "packages": []}
                )
                version = 1 + max((int(p["version"]) for p in g["packages"]), default=0)
                rel = Path("artifacts") / group / str(version) / "model.tar.gz"
                (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tar, self.root / rel)
                entry = {
                    "version": version,
                    "status": "PendingManualApproval",
                    "artifact": str(rel),
                    "sha256": digest,
                    "metrics": mets,
                    "customer_metadata": meta,
                    "description": description,
                    "created": _now(),
                }
                g["packages"].append(entry)
            return self._package(group, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _ensure_root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def list_packages(
        self, group: str, status: ApprovalStatus | None = None
    ) -> list[ModelPackage]:
        """Newest first, optionally only those with ``status``."""
        g = self._group(self._read(), group)
        pkgs = [self._package(group, p) for p in g["packages"]]
        if status is not None:
            pkgs = [p for p in pkgs if p.status == status]
        return sorted(pkgs, key=lambda p: p.version, reverse=True)

    def describe(self, group: str, version: int) -> ModelPackage:
        g = self._group(self._read(), group)
        for p in g["packages"]:
            if int(p["version"]) == version:
                return self._package(group, p)
        raise RegistryError(f"no version {version} in model package group {group!r}")

    def set_status(
        self, group: str, version: int, status: ApprovalStatus, description: str = ""
    ) -> ModelPackage:
        if status not in APPROVAL_STATUSES:
            raise RegistryError(f"ModelApprovalStatus must be one of {APPROVAL_STATUSES}")
        with self._locked() as data:
            g = self._group(data, group)
            for p in g["packages"]:
                if int(p["version"]) == version:
                    p["status"] = status
                    p["approval_description"] = description
                    return self._package(group, p)
        raise RegistryError(f"no version {version} in model package group {group!r}")

    def set_metadata(self, group: str, version: int, metadata: Mapping[str, str]) -> ModelPackage:
        """Add or replace customer metadata properties of one version (e.g. the monitor's
        drift status); the others are kept."""
        with self._locked() as data:
            g = self._group(data, group)
            for p in g["packages"]:
                if int(p["version"]) == version:
                    meta = dict(p.get("customer_metadata", {}))
                    meta.update({str(k): str(v) for k, v in metadata.items()})
                    p["customer_metadata"] = meta
                    return self._package(group, p)
        raise RegistryError(f"no version {version} in model package group {group!r}")

    def training_statistics(self, pkg: ModelPackage) -> dict[str, Any] | None:
        """The version's ``statistics.json`` (Model Monitor's layout, as JSON), or None
        when its bundle carries none; the artifact's checksum is verified first."""
        return read_training_statistics(self.verify(pkg))

    def approve(self, group: str, version: int, description: str = "") -> ModelPackage:
        return self.set_status(group, version, "Approved", description)

    def reject(self, group: str, version: int, description: str = "") -> ModelPackage:
        return self.set_status(group, version, "Rejected", description)

    def latest_approved(self, group: str) -> ModelPackage:
        approved = self.list_packages(group, "Approved")
        if not approved:
            raise RegistryError(f"model package group {group!r} has no Approved version")
        return approved[0]

    # --- deployments ----------------------------------------------------------------
    def deploy(
        self, group: str, endpoint: str = "pumpwatch", version: int | None = None, *,
        mode: RolloutMode = "all", percent: float | None = None,
        limits: RolloutLimits | None = None, by: str | None = None, reason: str = "",
    ) -> Deployment:
        """Point ``endpoint`` at ``version`` (default: the latest Approved); must be Approved.

        ``mode="all"`` makes it production at once (ending any rollout);
        ``"shadow"`` and ``"canary"`` (with ``percent`` of the pumps) put it beside
        production as the candidate, judged by ``limits``. Each is recorded in the
        history.
        """
        check_rollout(mode, percent)
        pkg = self.latest_approved(group) if version is None else self.describe(group, version)
        if pkg.status != "Approved":
            raise RegistryError(
                f"{pkg.model_version} is {pkg.status}: only Approved packages can be deployed"
            )
        self.verify(pkg)
        now, actor = _now(), by or who()
        with self._locked() as data:
            deps = data.setdefault("deployments", {})
            cur = deps.get(endpoint)
            if mode == "all":
                deps[endpoint] = {"group": group, "version": pkg.version, "deployed": now}
                self._log(data, actor, "deploy", endpoint, group,
                          None if cur is None or cur["group"] != group else int(cur["version"]),
                          pkg.version, reason, at=now)
            else:
                if cur is None:
                    raise RegistryError(
                        f"endpoint {endpoint!r} has no production deployment yet: deploy one "
                        f"first (without --{mode}), then try {pkg.model_version} beside it"
                    )
                if cur["group"] != group:
                    raise RegistryError(
                        f"endpoint {endpoint!r} serves group {cur['group']!r}: a candidate must "
                        f"come from the same group, not {group!r}"
                    )
                if int(cur["version"]) == pkg.version:
                    raise RegistryError(f"{pkg.model_version} is already production on "
                                        f"{endpoint!r}")
                # microseconds: a redeploy within the same second is a new trial
                started = datetime.now(UTC).isoformat(timespec="microseconds")
                cand = Candidate(version=pkg.version, mode=mode,
                                 percent=float(percent or 0.0),
                                 limits=limits or RolloutLimits(), started=started, by=actor)
                cur["candidate"] = cand.to_dict()
                self._log(data, actor, mode, endpoint, group, int(cur["version"]), pkg.version,
                          reason, at=now, percent=percent)
        dep = self.deployment(endpoint)
        assert dep is not None
        return dep

    def promote(
        self, group: str, endpoint: str = "pumpwatch", *, by: str | None = None,
        reason: str = "",
    ) -> Deployment:
        """Make the endpoint's candidate production (it must still be Approved)."""
        actor = by or who()
        with self._locked() as data:
            cur = self._current(data, group, endpoint)
            cand = cur.get("candidate")
            if not cand:
                raise RegistryError(f"endpoint {endpoint!r} has no candidate to promote "
                                    f"(production is {group}/{cur['version']})")
            pkg = self._package(group, next(
                p for p in self._group(data, group)["packages"]
                if int(p["version"]) == int(cand["version"])))
            if pkg.status != "Approved":
                raise RegistryError(f"{pkg.model_version} is {pkg.status} now: only Approved "
                                    "packages can be promoted")
            now = _now()
            old = int(cur["version"])
            data["deployments"][endpoint] = {"group": group, "version": pkg.version,
                                             "deployed": now}
            self._log(data, actor, "promote", endpoint, group, old, pkg.version, reason, at=now)
        dep = self.deployment(endpoint)
        assert dep is not None
        return dep

    def rollback(
        self, group: str, endpoint: str = "pumpwatch", *, by: str | None = None,
        reason: str = "", automatic: bool = False,
    ) -> Deployment:
        """Drop the endpoint's candidate; with none, return production to its previous version.

        ``automatic``: the model server decided (its limits were crossed); recorded as
        ``auto-rollback``. An automatic rollback of a candidate that is no longer on
        trial (promoted or replaced meanwhile) changes nothing.
        """
        actor = by or who()
        action: Action = "auto-rollback" if automatic else "rollback"
        with self._locked() as data:
            cur = self._current(data, group, endpoint)
            cand = cur.get("candidate")
            now = _now()
            if cand:
                del cur["candidate"]
                self._log(data, actor, action, endpoint, group, int(cand["version"]),
                          int(cur["version"]), reason, at=now)
            elif automatic:
                raise RegistryError(f"endpoint {endpoint!r} has no candidate on trial")
            else:
                prev = self._previous(data, group, endpoint, int(cur["version"]))
                if prev is None:
                    raise RegistryError(
                        f"endpoint {endpoint!r} has no candidate and no earlier production "
                        f"version of {group!r} to return to"
                    )
                self.verify(self._package(group, next(
                    p for p in self._group(data, group)["packages"]
                    if int(p["version"]) == prev)))
                old = int(cur["version"])
                data["deployments"][endpoint] = {"group": group, "version": prev,
                                                 "deployed": now}
                self._log(data, actor, action, endpoint, group, old, prev, reason, at=now)
        dep = self.deployment(endpoint)
        assert dep is not None
        return dep

    def history(self, group: str, endpoint: str | None = None) -> list[HistoryEntry]:
        """The group's deployment changes, oldest first (only ``endpoint``'s if given)."""
        return [
            HistoryEntry.from_dict(h) for h in self._read().get("history", [])
            if h["group"] == group and (endpoint is None or h["endpoint"] == endpoint)
        ]

    def _current(self, data: dict[str, Any], group: str, endpoint: str) -> dict[str, Any]:
        cur: dict[str, Any] | None = data.get("deployments", {}).get(endpoint)
        if cur is None:
            raise RegistryError(f"endpoint {endpoint!r} has no deployment")
        if cur["group"] != group:
            raise RegistryError(f"endpoint {endpoint!r} serves group {cur['group']!r}, "
                                f"not {group!r}")
        return cur

    @staticmethod
    def _previous(data: dict[str, Any], group: str, endpoint: str, current: int) -> int | None:
        """The production version before the switch that made ``current`` production."""
        for h in reversed(data.get("history", [])):
            if (h["endpoint"], h["group"]) != (endpoint, group):
                continue
            if h["action"] in ("deploy", "promote") and h["to_version"] == current:
                prev = h["from_version"]
                return None if prev is None or prev == current else int(prev)
        return None

    @staticmethod
    def _log(
        data: dict[str, Any], by: str, action: Action, endpoint: str, group: str,
        from_version: int | None, to_version: int | None, reason: str, *, at: str,
        percent: float | None = None,
    ) -> None:
        entry = HistoryEntry(at=at, by=by, action=action, endpoint=endpoint, group=group,
                             from_version=from_version, to_version=to_version, reason=reason,
                             percent=percent)
        data.setdefault("history", []).append(entry.to_dict())

    def deployment(self, endpoint: str) -> Deployment | None:
        d = self._read().get("deployments", {}).get(endpoint)
        if d is None:
            return None
        cand = d.get("candidate")
        return Deployment(
            endpoint=endpoint, group=d["group"], version=int(d["version"]),
            deployed=d.get("deployed", ""),
            candidate=Candidate.from_dict(cand) if cand else None,
        )

    def deployments(self) -> list[Deployment]:
        return [d for e in sorted(self._read().get("deployments", {})) if (d := self.deployment(e))]

    # --- artifacts ------------------------------------------------------------------
    def artifact_path(self, pkg: ModelPackage) -> Path:
        return Path(urllib.parse.unquote(urllib.parse.urlparse(pkg.artifact_uri).path))

    def verify(self, pkg: ModelPackage) -> Path:
        """The artifact's path, after checking its SHA-256 against the registered one."""
        path = self.artifact_path(pkg)
        if not path.is_file():
            raise RegistryError(f"artifact of {pkg.model_version} is missing: {path}")
        actual = sha256_file(path)
        if actual != pkg.sha256:
            raise ChecksumMismatchError(str(path), pkg.sha256, actual)
        return path

    def load(self, pkg: ModelPackage) -> Bundle:
        """Load a package's bundle (checksum verified); results name ``group/version``."""
        path = self.verify(pkg)
        return load_bundle(path, cache_dir=self.root / "cache", version=pkg.model_version)


def read_training_statistics(artifact: Path) -> dict[str, Any] | None:
    """``statistics.json`` of a bundle (directory or ``model.tar.gz``) as JSON, or None."""
    if artifact.is_dir():
        f = artifact / STATISTICS_FILE
        return json.loads(f.read_text()) if f.is_file() else None
    try:
        with tarfile.open(artifact, "r:*") as tar:
            member = next((m for m in tar.getmembers()
                           if m.isfile() and Path(m.name).name == STATISTICS_FILE), None)
            fh = tar.extractfile(member) if member is not None else None
            data = fh.read() if fh is not None else None
    except (tarfile.TarError, OSError) as exc:
        raise RegistryError(f"cannot read {artifact}: {exc}") from None
    return None if data is None else json.loads(data)


def is_bundle_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def default_registry_path() -> Path:
    """``$PUMPWATCH_REGISTRY``, else ``state/registry`` under the working directory."""
    env = os.environ.get("PUMPWATCH_REGISTRY")
    return Path(env) if env else Path("state") / "registry"
