"""Loading tables into datasets, the group encoder, and built-in examples."""

from reprogram.data.datasets import (
    GroupedDataset,
    ImageDataset,
    ImageTransform,
    TabularDataset,
    TensorGroupDataset,
    TextDataset,
    TokenizeCollate,
    collate_text,
    image_transform_from_meta,
    load_dataset,
    load_dataset_like,
    tokenize_collate,
)
from reprogram.data.encoding import FeatureEncoder, LabelEncoder
from reprogram.data.examples import SpuriousDigits, spurious_digits, spurious_digits_table
from reprogram.data.groups import GroupEncoder, as_columns, encode_groups, factorize
from reprogram.data.real import RealDataset, load_real_dataset
from reprogram.data.splits import load_train_val, split_frame
from reprogram.data.tables import SUPPORTED_SUFFIXES, read_table, require_columns

__all__ = [
    "GroupEncoder",
    "as_columns",
    "encode_groups",
    "factorize",
    "read_table",
    "require_columns",
    "SUPPORTED_SUFFIXES",
    "FeatureEncoder",
    "LabelEncoder",
    "GroupedDataset",
    "TabularDataset",
    "TextDataset",
    "ImageDataset",
    "TensorGroupDataset",
    "ImageTransform",
    "image_transform_from_meta",
    "collate_text",
    "tokenize_collate",
    "TokenizeCollate",
    "load_dataset",
    "load_dataset_like",
    "SpuriousDigits",
    "spurious_digits",
    "spurious_digits_table",
    "RealDataset",
    "load_real_dataset",
    "split_frame",
    "load_train_val",
]
