"""Datasets for captioning and VQA: file readers, the synthetic shapes data, image loading.

Everything a reader returns is a ``DatasetSplit`` of plain records (``types``); images are
decoded later, by ``load_rgb`` / ``load_images``, so an unreadable file is skipped and logged
instead of ending a run. This package knows nothing of models, losses or attacks.
"""

from prsl.data.captions import read_coco, read_flickr, read_imagefolder, read_karpathy
from prsl.data.images import (
    ImageLoadError,
    LoadedImages,
    load_images,
    load_rgb,
    save_image,
    to_pixels,
)
from prsl.data.registry import READERS, check_reader_options, read_dataset
from prsl.data.samples import (
    Sample,
    any_readable,
    batch_prompts,
    evaluation_samples,
    load_batch,
    majority_answer,
    require_usable,
    training_samples,
)
from prsl.data.shapes import (
    make_shapes_captions,
    make_shapes_vqa,
    save_shapes_imagefolder,
    shapes_scenes,
)
from prsl.data.shapes_scene import Scene, Shape, generate_scene, render_scene
from prsl.data.shapes_text import scene_captions, scene_questions
from prsl.data.types import (
    CaptionExample,
    DatasetSplit,
    ImageSource,
    LazyImage,
    Skipped,
    VQAExample,
    dropped_summary,
    skip_summary,
    unique_skips,
)
from prsl.data.vqa import ANSWER_COPIES, read_vg, read_vqav2

__all__ = [
    "ANSWER_COPIES",
    "READERS",
    "CaptionExample",
    "DatasetSplit",
    "ImageLoadError",
    "ImageSource",
    "Sample",
    "LazyImage",
    "LoadedImages",
    "Scene",
    "Shape",
    "Skipped",
    "VQAExample",
    "any_readable",
    "batch_prompts",
    "check_reader_options",
    "dropped_summary",
    "evaluation_samples",
    "generate_scene",
    "load_batch",
    "load_images",
    "load_rgb",
    "majority_answer",
    "make_shapes_captions",
    "make_shapes_vqa",
    "read_coco",
    "read_dataset",
    "read_flickr",
    "read_imagefolder",
    "read_karpathy",
    "read_vg",
    "read_vqav2",
    "render_scene",
    "require_usable",
    "save_image",
    "save_shapes_imagefolder",
    "scene_captions",
    "scene_questions",
    "shapes_scenes",
    "skip_summary",
    "to_pixels",
    "training_samples",
    "unique_skips",
]
