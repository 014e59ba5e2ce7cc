"""The tensors of a TorchScript archive, read without running any of the archive's code.

OpenAI released its CLIPs as TorchScript archives. `torch.jit.load` compiles and runs the archive's
TorchScript while loading (a module's `__setstate__`, for one), so a crafted `.pt` file can do
whatever TorchScript can, e.g. overwrite a file through `torch.from_file(..., shared=True)`. This
reader opens the zip itself instead:

- `data.pkl` (the module tree) is unpickled by `_ArchiveUnpickler`, which makes nothing but plain
  Python values, inert records of tensors over the archive's `data/<key>` records (each checked to
  stay inside its record), and `ScriptObject` records of the archive's `__torch__.*` objects that
  keep their pickled state and have no behaviour. Any other global (`os.system`, `builtins.eval`,
  ...) is refused, so no callable named by the file is ever run.
- Which attributes of a module are parameters and buffers is read as text off the class
  declarations in `code/` (`__parameters__ = [...]`, `__buffers__ = [...]`); the code is never
  compiled. A module that restores itself with its own code (`__setstate__`) is refused, since its
  state means what that code makes of it.
- The module tree is walked as `torch.nn.Module.state_dict` walks it (a module's parameters, then its
  buffers, then its children in order), so the keys are those of `torch.jit.load(path).state_dict()`.

Every failure is an `ArchiveError` (damaged or unsupported) or `UnsafeArchive` (asks for more than
tensors) carrying a one-line reason.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MAX_PICKLE_BYTES = 64 << 20  # far more than the module tree of any CLIP takes
MAX_CODE_BYTES = 16 << 20
MAX_BYTEORDER_BYTES = 16
TORCHSCRIPT_NAMESPACE = "__torch__"
_STORAGE_KEY = re.compile(r"[0-9]{1,12}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLASS_LINE = re.compile(r"class ([A-Za-z_][A-Za-z0-9_]*)\(([A-Za-z_][A-Za-z0-9_.]*)\):")
_NAME_LIST = re.compile(r"\s+(__parameters__|__buffers__) = \[(.*)\]")
_QUOTED = re.compile(r'"([^"\\]*)"')
_SETSTATE = re.compile(r"\s+def __setstate__\(")

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class ArchiveError(Exception):
    """The archive is damaged or laid out in a way this reader does not know; the message is one line."""


class UnsafeArchive(ArchiveError):
    """The archive asks for something other than tensors and plain values (a callable, code to run)."""


class _Inert:
    """Base of what the unpickler makes of the archive's globals and records.

    Pickle's BUILD opcode calls `__setstate__` on any object (and `torch.Tensor.__setstate__` would
    re-point a tensor at any memory), so none of these is a tensor or takes a state; tensors are made
    only after unpickling, from checked `_TensorRecord`s.
    """

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise ArchiveError(f"it sets the state of a {type(self).__name__.lstrip('_')}")


class _Global(_Inert):
    """An allowed global: calls the function that stands for it here."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class _StorageType(_Inert):
    """What a `torch.<Type>Storage` global stands for here: just the element type."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _StorageRecord(_Inert):
    """A `data/<key>` record read as a flat tensor of its element type."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


class _TensorRecord(_Inert):
    """A tensor as a checked view (offset, size, stride) of a storage record."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRecord, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def tensor(self) -> torch.Tensor:
        return self.storage.flat.as_strided(self.size, self.stride, self.offset)


class ScriptObject:
    """An object of one of the archive's TorchScript classes: its pickled state, and nothing it could run."""

    qualified_name = ""
    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


@dataclass(frozen=True)
class ClassDeclaration:
    """What the archive's `code/` says about a class, read as text."""

    is_module: bool
    parameters: tuple[str, ...]
    buffers: tuple[str, ...] | None  # None: archives from before buffers were declared
    restores_itself: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(_is_int(item) and item >= 0 for item in value)


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRecord:
    """`torch._utils._rebuild_tensor_v2`'s arguments, checked to stay inside the storage record."""
    if not isinstance(storage, _StorageRecord):
        raise ArchiveError("a tensor is built on something other than a tensor record")
    if not (_is_int(storage_offset) and storage_offset >= 0 and _int_tuple(size) and _int_tuple(stride)):
        raise ArchiveError(f"a tensor has a malformed offset, size or stride ({storage_offset!r:.40}, {size!r:.60})")
    if len(size) != len(stride) or backward_hooks or metadata:
        raise ArchiveError("a tensor has a malformed layout, backward hooks or extra metadata")
    numel = storage.flat.numel()
    if all(size):  # an empty tensor reads nothing
        last = storage_offset + sum((extent - 1) * step for extent, step in zip(size, stride))
        if last >= numel:
            raise ArchiveError(f"a tensor of size {tuple(size)} reaches element {last} of a record of {numel}")
    elif storage_offset > numel:
        raise ArchiveError("an empty tensor starts past the end of its record")
    return _TensorRecord(storage, storage_offset, size, stride)


def _typed_list(values: Any) -> list:
    """`torch.jit._pickle.build_intlist` and its kin: the list itself."""
    if not isinstance(values, list):
        raise ArchiveError("a typed list is not a list")
    return values


def _restore_type_tag(value: Any, type_string: Any) -> Any:
    """`torch.jit._pickle.restore_type_tag`: the static type of a dict or list is not needed."""
    return value


def _allowed_globals() -> dict[tuple[str, str], _Inert]:
    """The globals a TorchScript `data.pkl` names for tensors and typed containers, as inert stand-ins."""
    functions: dict[tuple[str, str], Callable[..., Any]] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("collections", "OrderedDict"): OrderedDict,
        ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
        **{("torch.jit._pickle", name): _typed_list
           for name in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")},
    }
    return {
        **{key: _Global(function) for key, function in functions.items()},
        **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    }


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl` into plain values, `_TensorRecord`s and `ScriptObject`s; refuses every other global."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, big_endian: bool) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix
        self.big_endian = big_endian
        self.allowed = _allowed_globals()
        self.storages: dict[str, _StorageRecord] = {}
        self.classes: dict[str, type[ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = self.allowed.get((module, name))
        if allowed is not None:
            return allowed
        parts = module.split(".")
        if parts[0] == TORCHSCRIPT_NAMESPACE and all(_IDENTIFIER.fullmatch(part) for part in parts[1:] + [name]):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (ScriptObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        unsupported_tensor = (module, name[:8]) == ("torch._utils", "_rebuild") or (
            module == "torch" and name.endswith("Storage")
        )
        if unsupported_tensor:
            raise ArchiveError(f"it holds a kind of tensor this reader does not take ({module}.{name})"[:200])
        raise UnsafeArchive(f"it asks for {module}.{name}"[:200])

    def persistent_load(self, pid: Any) -> _StorageRecord:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ArchiveError(f"an unknown kind of record {pid!r:.60}")
        _, kind, key, location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(location, str) or not _is_int(numel) or numel < 0:
            raise ArchiveError(f"a malformed tensor record reference {pid!r:.80}")
        if not isinstance(key, str) or not _STORAGE_KEY.fullmatch(key):
            raise ArchiveError(f"a tensor record is named {key!r:.40}, not by a number")
        if key in self.storages:
            cached = self.storages[key].flat
            if cached.dtype != kind.dtype or cached.numel() != numel:
                raise ArchiveError(f"tensor record data/{key} is read as two different types or sizes")
        else:
            self.storages[key] = _StorageRecord(self._read_record(key, kind.dtype, numel))
        return self.storages[key]

    def _read_record(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """The 1-D tensor of record `data/<key>`, whose size must be exactly what `numel` elements take."""
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise ArchiveError(f"tensor record data/{key} is missing") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        expected = numel * itemsize
        if info.file_size != expected:
            raise ArchiveError(f"tensor record data/{key} holds {info.file_size} bytes, its tensors need {expected}")
        if info.compress_type != zipfile.ZIP_STORED:  # bounds what is read by the size of the file
            raise ArchiveError(f"tensor record data/{key} is compressed (TorchScript stores tensors uncompressed)")
        if expected == 0:
            return torch.empty(0, dtype=dtype)
        buffer = bytearray(expected)
        with self.archive.open(info) as record:
            if record.readinto(buffer) != expected:
                raise ArchiveError(f"tensor record data/{key} is truncated")
        raw = torch.frombuffer(buffer, dtype=torch.uint8)
        if self.big_endian and itemsize > 1:
            raw = raw.view(-1, itemsize).flip(1).reshape(-1)
        return raw.view(dtype)


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    """The folder all records sit in ('name/'), told by the one top-level `data.pkl`."""
    prefixes = [name[: -len("data.pkl")] for name in archive.namelist() if re.fullmatch(r"[^/]*/data\.pkl", name)]
    if len(prefixes) != 1:
        raise ArchiveError("it has no data.pkl record" if not prefixes else "it has more than one data.pkl record")
    return prefixes[0]


def _read_limited(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise ArchiveError(f"its record {name} is {info.file_size} bytes, more than a CLIP needs ({limit})")
    return archive.read(info)


def parse_declarations(source: str, module: str) -> dict[str, ClassDeclaration]:
    """The classes a `code/` file declares, by qualified name, read off its text (nothing is compiled)."""
    declarations: dict[str, ClassDeclaration] = {}
    current: str | None = None
    fields: dict[str, Any] = {}

    def close() -> None:
        if current is not None:
            declarations[f"{module}.{current}"] = ClassDeclaration(**fields)

    for line in source.splitlines():
        if match := _CLASS_LINE.fullmatch(line):
            close()
            current = match.group(1)
            fields = dict(is_module=match.group(2) == "Module", parameters=(), buffers=None, restores_itself=False)
        elif current is not None and line[:1] in (" ", "\t"):
            if match := _NAME_LIST.fullmatch(line):
                names = tuple(_QUOTED.findall(match.group(2)))
                fields["parameters" if match.group(1) == "__parameters__" else "buffers"] = names
            elif _SETSTATE.match(line):
                fields["restores_itself"] = True
        elif line.strip():
            close()
            current = None
    close()
    return declarations


class _Declarations:
    """Class declarations of an archive, read file by file on first use."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        self.archive = archive
        self.prefix = prefix
        self.names = set(archive.namelist())
        self.known: dict[str, ClassDeclaration] = {}
        self.read_modules: set[str] = set()

    def __getitem__(self, qualified_name: str) -> ClassDeclaration:
        module = qualified_name.rpartition(".")[0]
        if module not in self.read_modules:
            self.read_modules.add(module)
            name = f"{self.prefix}code/{module.replace('.', '/')}.py"
            if name in self.names:
                source = _read_limited(self.archive, name, MAX_CODE_BYTES).decode("utf-8", errors="replace")
                self.known.update(parse_declarations(source, module))
        if qualified_name not in self.known:
            raise ArchiveError(f"it does not declare its class {qualified_name}"[:200])
        return self.known[qualified_name]


def _module_state(record: ScriptObject, declarations: _Declarations) -> tuple[ClassDeclaration, dict[str, Any]]:
    declaration = declarations[record.qualified_name]
    if declaration.restores_itself:
        raise UnsafeArchive(
            f"its object {record.qualified_name} restores itself with the archive's own code, __setstate__"[:200]
        )
    if not isinstance(record.state, dict) or not all(isinstance(name, str) for name in record.state):
        raise ArchiveError(f"the state of {record.qualified_name} is not a dict of attributes"[:200])
    return declaration, record.state


def module_tree_state_dict(root: Any, declarations: _Declarations) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the recorded module tree, keyed and ordered as `Module.state_dict`."""
    if not isinstance(root, ScriptObject):
        raise ArchiveError(f"its data.pkl holds a {type(root).__name__}, not a TorchScript module")
    state_dict: dict[str, torch.Tensor] = {}
    visited: set[int] = set()
    pending: list[tuple[str, ScriptObject]] = [("", root)]
    while pending:
        prefix, record = pending.pop()
        if id(record) in visited:
            raise ArchiveError(f"its module {prefix.rstrip('.') or 'root'} appears twice in the module tree")
        visited.add(id(record))
        declaration, state = _module_state(record, declarations)
        if not declaration.is_module:
            raise ArchiveError(f"its root {record.qualified_name} is not a module"[:200])
        buffers = declaration.buffers
        if buffers is None:
            buffers = tuple(name for name, value in state.items() if isinstance(value, _TensorRecord))
        names = list(declaration.parameters) + [name for name in buffers if name not in declaration.parameters]
        for name in names:
            value = state.get(name)
            if isinstance(value, _TensorRecord):
                state_dict[prefix + name] = value.tensor()
            elif value is not None:
                raise ArchiveError(f"its parameter {prefix}{name} is a {type(value).__name__}, not a tensor"[:200])
        children = [
            (f"{prefix}{name}.", value)
            for name, value in state.items()
            if isinstance(value, ScriptObject) and declarations[value.qualified_name].is_module
        ]
        pending.extend(reversed(children))
    return state_dict


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of the TorchScript archive at `path`, as `torch.jit.load(path).state_dict()`
    gives them (on the CPU), without running any of its code."""
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive)
            byteorder = prefix + "byteorder"
            big_endian = (
                byteorder in archive.namelist()  # older archives have none: little-endian
                and _read_limited(archive, byteorder, MAX_BYTEORDER_BYTES).strip() == b"big"
            )
            data = _read_limited(archive, prefix + "data.pkl", MAX_PICKLE_BYTES)
            root = _ArchiveUnpickler(data, archive, prefix, big_endian).load()
            return module_tree_state_dict(root, _Declarations(archive, prefix))
    except ArchiveError:
        raise
    except Exception as error:  # a damaged pickle or zip raises many kinds (UnpicklingError, EOFError, ...)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ArchiveError(f"damaged archive ({type(error).__name__}: {first_line})") from error
