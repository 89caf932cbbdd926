"""Scrape a ``/metrics`` endpoint for real and parse it with prometheus_client's parser."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape: ``families`` (name -> type) and ``values`` of every sample."""

    text: str
    families: dict[str, str]
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, /, **labels: str) -> float:
        """The sample ``name{labels}``; a missing one fails with the names there are."""
        key = (name, tuple(sorted(labels.items())))
        if key not in self.samples:
            near = sorted({k for k in self.samples if k[0] == name})
            raise AssertionError(f"no sample {name}{labels or ''} (have: {near or 'none'})")
        return self.samples[key]

    @property
    def sample_names(self) -> set[str]:
        return {name for name, _ in self.samples}


DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
_ROW = re.compile(r"^\| `([a-z_:][a-z0-9_:]*)` \| (counter|gauge|histogram) \|")


def documented() -> dict[str, str]:
    """Every series docs/metrics.md lists in its tables: name (as scraped) -> type."""
    out: dict[str, str] = {}
    for line in DOCS.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def assert_documented(s: Scrape, prefix: str) -> None:
    """The service's ``prefix`` series are exactly those docs/metrics.md lists."""
    exposed = {
        (name + "_total" if kind == "counter" else name): kind
        for name, kind in s.families.items()
        if name.startswith(prefix) and not name.endswith("_created")  # the client's stamps
    }
    docs = {k: v for k, v in documented().items() if k.startswith(prefix)}
    assert exposed == docs, (
        f"undocumented: {sorted(exposed.keys() - docs.keys())}; "
        f"documented, not exposed: {sorted(docs.keys() - exposed.keys())}; "
        f"types differ: {sorted(k for k in exposed.keys() & docs.keys() if exposed[k] != docs[k])}"
    )


def parse(text: str) -> Scrape:
    families: dict[str, str] = {}
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return Scrape(text, families, samples)


def scrape(url: str, timeout: float = 10.0) -> Scrape:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 -- a local test URL
        assert r.status == 200
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain"), ctype
        return parse(r.read().decode())
