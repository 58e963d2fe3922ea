"""A header block as the wire carried it, readable as a case-insensitive mapping.

The request path already holds every header block as llhttp gave it: (name, value)
byte pairs. Handing those to the analysis side as they are, and building the
multidict only where something reads it (in the worker), keeps header decoding off
the request path."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from multidict import CIMultiDict


class RawHeaders(Mapping[str, str]):
    __slots__ = ("_parsed", "raw")

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._parsed: CIMultiDict[str] | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> RawHeaders:
        """A text mapping (a response lookout made itself) as a raw block."""
        if isinstance(headers, RawHeaders):
            return headers
        return cls([(name.encode("utf-8", "surrogateescape"),
                     value.encode("utf-8", "surrogateescape"))
                    for name, value in headers.items()])

    @property
    def parsed(self) -> CIMultiDict[str]:
        if self._parsed is None:
            self._parsed = CIMultiDict(
                (name.decode("utf-8", "surrogateescape"), value.decode("utf-8",
                                                                       "surrogateescape"))
                for name, value in self.raw)
        return self._parsed

    def __getitem__(self, name: str) -> str:
        return self.parsed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parsed)

    def __len__(self) -> int:
        return len(self.raw)

    def __eq__(self, other: object) -> bool:
        """Equal to any header mapping with the same fields, in order, names in any case."""
        if isinstance(other, RawHeaders):
            other = other.parsed
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.parsed == CIMultiDict(other)

    __hash__ = None  # type: ignore[assignment]  # mutable view, like the multidict

    def getall(self, name: str, default: list[str] | None = None) -> list[str]:
        return self.parsed.getall(name, default)

    def __repr__(self) -> str:
        return f"RawHeaders({self.raw!r})"
