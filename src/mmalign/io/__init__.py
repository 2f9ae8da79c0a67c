"""Readers, writers and safe file handling. Front door: `mmalign.io.formats` (iter_records,
write_records, detect_format); images: `mmalign.io.images`; CLI: `mmalign.io.cli`."""
