"""Datasets for captioning and VQA: file readers, the synthetic shapes data, image loading.

Everything a reader returns is a ``DatasetSplit`` of plain records (``types``); images are
decoded later, by ``load_rgb`` / ``load_images``, so an unreadable file is skipped and logged
instead of ending a run. This package knows nothing of models, losses or attacks.
"""

from prsl.data.captions import read_coco, read_flickr, read_imagefolder, read_karpathy
from prsl.data.collate import TextBatch, collate_text, pad_labels
from prsl.data.images import ImageLoadError, LoadedImages, load_images, load_rgb, to_pixels
from prsl.data.registry import READERS, read_dataset
from prsl.data.shapes import (
    make_shapes_captions,
    make_shapes_vqa,
    save_shapes_imagefolder,
    shapes_scenes,
)
from prsl.data.shapes_scene import Scene, Shape, generate_scene, render_scene
from prsl.data.shapes_text import scene_captions, scene_questions
from prsl.data.types import CaptionExample, DatasetSplit, ImageSource, Skipped, VQAExample
from prsl.data.vqa import ANSWER_COPIES, read_vg, read_vqav2

__all__ = [
    "ANSWER_COPIES",
    "READERS",
    "CaptionExample",
    "DatasetSplit",
    "ImageLoadError",
    "ImageSource",
    "LoadedImages",
    "Scene",
    "Shape",
    "Skipped",
    "TextBatch",
    "VQAExample",
    "collate_text",
    "generate_scene",
    "load_images",
    "load_rgb",
    "make_shapes_captions",
    "make_shapes_vqa",
    "pad_labels",
    "read_coco",
    "read_dataset",
    "read_flickr",
    "read_imagefolder",
    "read_karpathy",
    "read_vg",
    "read_vqav2",
    "render_scene",
    "save_shapes_imagefolder",
    "scene_captions",
    "scene_questions",
    "shapes_scenes",
    "to_pixels",
]
