"""A settings file (params.yaml) read as YAML within limits: its size, how many values its aliases expand to, and
how deep it nests. Pure Python (PyYAML's own SafeLoader, subclassed).

PyYAML shares an aliased node rather than copying it, so a "billion laughs" file (nine levels of nine aliases of the
level below) loads in microseconds, and then every walk over it (typing the settings, quoting a value in an error,
``yaml.safe_dump``) visits 9**9 values: minutes of CPU or a MemoryError, far from the file that caused it. Counting
the values each node stands for once expanded, while the file is composed, refuses such a file at once, naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, SequenceNode

from mdpo_pipeline.core.errors import SHOWN_CHARS, ConfigError, clip

# The limits are far above any real params file (5 KB, a few hundred values) and low enough that PyYAML's pure-Python
# composer (tens of microseconds a value) refuses the worst file within them in well under a second.
#: Largest settings file read.
MAX_BYTES = 256 * 1024
#: Most values (scalars, lists and mappings, an alias counted as all it stands for) one file may hold.
MAX_VALUES = 10_000
#: Deepest nesting of lists and mappings (the composer recurses: far below Python's recursion limit).
MAX_DEPTH = 64


class _Limit(Exception):
    """A limit of the file was passed; the message says which."""


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that counts every node's expanded size and its depth as it composes, and stops past the limits."""

    max_values = MAX_VALUES
    max_depth = MAX_DEPTH

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for once aliases are expanded
        self._total = 0  # values of the document so far, aliases expanded
        self._depth = 0

    def _count(self, n: int) -> None:
        # Counted as each value is met, not when its list closes: a flat list of 500,000 values stops at the limit.
        self._total += n
        if self._total > self.max_values:
            raise _Limit(f"it holds more than {self.max_values} values (YAML aliases expanded), the limit for a "
                         "settings file: nested aliases (a 'billion laughs' file)?")

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None:
                if id(target) not in self._sizes:
                    # An alias inside its own anchor: a cycle, which every later walk would follow for ever.
                    anchor = clip(self.peek_event().anchor, SHOWN_CHARS)
                    raise _Limit(f"the alias *{anchor} refers to a value that contains it (a cycle)")
                self._count(self._sizes[id(target)])
            return super().compose_node(parent, index)  # an undefined alias: PyYAML's own error
        self._count(1)
        self._depth += 1
        if self._depth > self.max_depth:
            raise _Limit(f"values nest more than {self.max_depth} levels deep, the limit for a settings file")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, SequenceNode):
            size = 1 + sum(self._sizes[id(item)] for item in node.value)
        elif isinstance(node, MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return node


def read_yaml(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES, max_values: int = MAX_VALUES,
              max_depth: int = MAX_DEPTH) -> Any:
    """The one YAML document in ``path``, read within the limits; a ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # never more: a FIFO or /dev/zero has no size to check first
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: params file not found") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from e
    if len(data) > max_bytes:
        raise ConfigError(f"{path}: larger than {max_bytes} bytes, the limit for a settings file")
    loader = _LimitedLoader(data)  # bytes: PyYAML detects UTF-8/16 and refuses anything else as a ReaderError
    loader.max_values, loader.max_depth = max_values, max_depth
    try:
        return loader.get_single_data()
    except _Limit as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {clip(str(e))}") from e
    except ValueError as e:  # e.g. an integer past Python's digit limit
        raise ConfigError(f"{path}: a value YAML cannot read ({clip(str(e), 200)})") from e
    finally:
        loader.dispose()
