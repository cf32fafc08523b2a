"""What a descriptor check reports: ``VnfdError`` (file, path, line, message) and the
collector that gathers every one of them (never only the first)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VnfdError:
    """One problem: the package file, the dotted path inside it, the YAML line (1-based,
    None when the file gives none) and what was expected."""

    file: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path or '(top)'}: {self.message}"


@dataclass(frozen=True)
class At:
    """A place in a descriptor file: where an error is reported."""

    file: str
    path: str = ""
    line: int | None = None

    def key(self, name: object, line: int | None = None) -> At:
        path = f"{self.path}.{name}" if self.path else str(name)
        return At(self.file, path, line if line is not None else self.line)

    def item(self, index: int, line: int | None = None) -> At:
        return At(self.file, f"{self.path}[{index}]", line if line is not None else self.line)


@dataclass
class Problems:
    """Collects errors in the order found; ``unsupported`` words them the one way."""

    errors: list[VnfdError] = field(default_factory=list)

    def error(self, at: At, message: str) -> None:
        self.errors.append(VnfdError(at.file, at.path, at.line, message))

    def unsupported(self, at: At, feature: str) -> None:
        where = f"{at.file}:{at.path}" if at.path else at.file
        self.error(at, f"unsupported: {feature} at {where}")

    def __bool__(self) -> bool:
        return bool(self.errors)


class VnfdInvalid(Exception):
    """A descriptor or package that does not validate; ``errors`` holds every problem."""

    def __init__(self, errors: list[VnfdError]) -> None:
        self.errors = list(errors)
        first = str(errors[0]) if errors else "invalid descriptor"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)
