"""What an untrusted file holds, counted on its raw bytes before any reader builds it: a CSV's records and their
fields, JSON rows and their keys and nesting, a Parquet file's pages. Counting only: the limits, and what to say
when a file passes them, are training/readers.py's.

Nothing here builds what it counts: fields are counted by matching, not split into lists; a JSON row's keys are
counted with its strings blanked out; a Parquet page is known by its header alone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

PARQUET_DELTA_BYTE_ARRAY = 7  # Parquet's number for the encoding that stores each value as a change to the last


class ShapeError(ValueError):
    """A file is not the shape its type promises (a .json file that is not an array of rows, say)."""


# ----------------------------------------------------------------------------- CSV

# How pandas' CSV parser splits records (quote character ", "" inside quotes, quotes mid-field taken literally,
# \r, \n or \r\n between records, blank lines skipped), matched on the raw bytes to count fields without making any.
_CSV_BLANK = re.compile(rb"[\r\n]+")
_CSV_PLAIN_RECORD = re.compile(rb'[^"\r\n]*+(?:\r\n|\r|\n|\Z)')  # no quote: one line, fields = its commas + 1
_CSV_FIELD = re.compile(rb'(?:"(?:[^"]++|"")*+(?:"[^,\r\n]*+)?|[^,\r\n"][^,\r\n]*+)?(,|\r\n|\r|\n|\Z)')


def csv_fields(data: bytes, most: int) -> Iterator[int]:
    """The number of fields of each record of a CSV (blank lines skipped, as pandas skips them), the header first.

    A record without quotes is one line and its count is exact, however large; a record with quotes is counted
    field by field and the count stops at `most` + 1. Nothing is built: a line of 10 million commas is one count.
    """
    position = 0
    while True:
        blank = _CSV_BLANK.match(data, position)
        position = blank.end() if blank else position
        if position >= len(data):
            return
        plain = _CSV_PLAIN_RECORD.match(data, position)
        if plain is not None:
            yield data.count(b",", position, plain.end()) + 1
            position = plain.end()
        else:
            fields, position = _count_fields(data, position, most)
            yield fields


def _count_fields(data: bytes, position: int, most: int) -> tuple[int, int]:
    """The fields of the record at `position` (at most `most` + 1: counting stops there) and where the next begins."""
    fields = 0
    while True:
        field = _CSV_FIELD.match(data, position)
        if field is None:  # every byte fits one branch of _CSV_FIELD; kept as an error, not a loop, if one does not
            raise ValueError(f"unreadable CSV at byte {position}")
        fields, position = fields + 1, field.end()
        if field.group(1) != b"," or fields > most:
            return fields, position


# ----------------------------------------------------------------------------- JSON

_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_JSON_FLAT_OBJECT = re.compile(r'\{(?:[^{}\[\]"]++|"(?:[^"\\]++|\\.)*+")*+\}', re.DOTALL)
_JSON_SPACE = re.compile(r"[ \t\r\n]*+")


def json_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of JSON lines that is not blank (pandas skips blank lines), one at a time."""
    position, line_number = 0, 1
    while True:
        start = _JSON_SPACE.match(text, position).end()
        if start == len(text):
            return
        line_number += text.count("\n", position, start)
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        yield line_number, text[start:end]
        position = end


def json_array_rows(text: str) -> Iterator[str]:
    """The text of each object of a JSON array of flat objects, one at a time; ShapeError when the text is not one
    (objects or lists inside a row included)."""
    shape = "is not a JSON array of flat rows"
    position = _JSON_SPACE.match(text).end()
    if not text.startswith("[", position):
        raise ShapeError(shape)
    position = _JSON_SPACE.match(text, position + 1).end()
    rows = 0
    while not text.startswith("]", position):
        rows += 1
        row = _JSON_FLAT_OBJECT.match(text, position)
        if row is None:
            raise ShapeError(f"has a row ({rows:,}) that is not a flat object of text and numbers")
        yield row.group()
        position = _JSON_SPACE.match(text, row.end()).end()
        if text.startswith(",", position):
            position = _JSON_SPACE.match(text, position + 1).end()
        elif not text.startswith("]", position):
            raise ShapeError(shape)
    if _JSON_SPACE.match(text, position + 1).end() != len(text):
        raise ShapeError(shape)


@dataclasses.dataclass(frozen=True)
class JsonRowShape:
    is_object: bool  # {...}, not a list, a string or a number
    nested: bool  # an object or list inside it
    keys: int  # its keys, nested ones included


def json_row_shape(row: str) -> JsonRowShape:
    """A JSON row's shape from its text, its strings blanked first: every brace, bracket and colon left is structure."""
    skeleton = _JSON_STRING.sub('""', row)
    return JsonRowShape(
        skeleton.lstrip().startswith("{"), skeleton.count("{") + skeleton.count("[") > 1, skeleton.count(":")
    )


# ----------------------------------------------------------------------------- Parquet


@dataclasses.dataclass
class ParquetPages:
    count: int = 0  # pages, in every column chunk
    uncompressed: int = 0  # bytes they decompress to, all together
    values: int = 0  # values in the column that holds the most: its rows, nulls included, for a flat table
    prefix_coded: bool = False  # a data page in DELTA_BYTE_ARRAY


def parquet_pages(path: Path, metadata, most: int) -> ParquetPages:
    """What the pages of every column chunk hold, from their own headers (the chunks' places come from the footer,
    as pyarrow finds them). Stops counting past `most` pages."""
    pages, values = ParquetPages(), {}
    with path.open("rb") as file:
        for group in map(metadata.row_group, range(metadata.num_row_groups)):
            for index, column in enumerate(map(group.column, range(group.num_columns))):
                start = column.data_page_offset
                if column.has_dictionary_page and 0 < (column.dictionary_page_offset or 0) < start:
                    start = column.dictionary_page_offset
                position, end = start, start + column.total_compressed_size
                while position < end and pages.count <= most:
                    header, length = _page_header(file, position, end)
                    sizes = header.get(2, 0), header.get(3, 0)  # uncompressed, compressed
                    if min(sizes) < 0:
                        raise ValueError(f"a page at byte {position} has a negative size")
                    data = header.get(5) or header.get(8) or {}  # a data page, version 1 or 2
                    encoding = data.get(2) if 5 in header else data.get(4)
                    pages.count += 1
                    pages.uncompressed += sizes[0]
                    pages.prefix_coded |= encoding == PARQUET_DELTA_BYTE_ARRAY
                    values[index] = values.get(index, 0) + max(data.get(1, 0), 0)
                    position += length + sizes[1]
    pages.values = max(values.values(), default=0)
    return pages


def _page_header(file, position: int, end: int) -> tuple[dict, int]:
    """The page header at `position` (its fields by number) and its length: read a few kilobytes at a time, more
    only if it is longer (its statistics can hold values), never past `end`, the end of its column chunk."""
    window = 4096
    while True:
        file.seek(position)
        wanted = min(window, end - position)
        data = file.read(wanted)
        reader = _Thrift(data)
        try:
            return reader.struct(), reader.position
        except IndexError:  # the header goes on past what was read
            if len(data) < wanted or wanted == end - position:
                raise ValueError(f"the page header at byte {position} runs past its column chunk or the file") from None
            window *= 4


class _Thrift:
    """Just enough of Thrift's compact protocol (Parquet's metadata) to read a page header: integers and structs
    are kept, everything else skipped. Reading past the bytes given raises IndexError."""

    STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)

    def __init__(self, data: bytes):
        self.data, self.position = data, 0

    def advance(self, count: int) -> None:
        self.position += count
        if self.position > len(self.data):
            raise IndexError(self.position)

    def byte(self) -> int:
        self.advance(1)
        return self.data[self.position - 1]

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("a malformed number in a Parquet page header")

    def integer(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)  # zigzag

    def struct(self) -> dict:
        fields, field = {}, 0
        while (header := self.byte()) & 0x0F != self.STOP:
            kind, delta = header & 0x0F, header >> 4
            field = field + delta if delta else self.integer()
            if kind in (self.I16, self.I32, self.I64):
                fields[field] = self.integer()
            elif kind == self.STRUCT:
                fields[field] = self.struct()
            else:
                self.skip(kind)
        return fields

    def skip(self, kind: int) -> None:
        if kind in (self.TRUE, self.FALSE):
            return
        if kind == self.BYTE:
            self.advance(1)
        elif kind in (self.I16, self.I32, self.I64):
            self.varint()
        elif kind == self.DOUBLE:
            self.advance(8)
        elif kind == self.BINARY:
            self.advance(self.varint())
        elif kind in (self.LIST, self.SET):
            header = self.byte()
            size, element = header >> 4, header & 0x0F
            for _ in range(self.varint() if size == 15 else size):  # each element takes a byte at least
                self.byte() if element in (self.TRUE, self.FALSE) else self.skip(element)
        elif kind == self.MAP:
            size = self.varint()
            kinds = self.byte() if size else 0
            for _ in range(size):
                self.skip(kinds >> 4)
                self.skip(kinds & 0x0F)
        elif kind == self.STRUCT:
            self.struct()
        else:
            raise ValueError(f"an unknown field type ({kind}) in a Parquet page header")
