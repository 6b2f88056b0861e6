"""Loading tables into datasets, the group encoder, and built-in examples."""

from reprogram.data.groups import GroupEncoder, as_columns, encode_groups, factorize

__all__ = ["GroupEncoder", "as_columns", "encode_groups", "factorize"]
