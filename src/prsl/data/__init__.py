"""Datasets for captioning and VQA: file readers, the synthetic shapes data, image loading.

Everything a reader returns is a ``DatasetSplit`` of plain records (``types``); images are
decoded later, by ``load_rgb`` / ``load_images``, so an unreadable file is skipped and logged
instead of ending a run. This package knows nothing of models, losses or attacks.
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "captions": ["read_coco", "read_flickr", "read_imagefolder", "read_karpathy"],
        "images": [
            "ImageLoadError",
            "LoadedImages",
            "load_images",
            "load_rgb",
            "save_image",
            "to_pixels",
        ],
        "registry": ["READERS", "check_reader_options", "read_dataset"],
        "samples": [
            "Sample",
            "any_readable",
            "batch_prompts",
            "evaluation_samples",
            "load_batch",
            "majority_answer",
            "require_usable",
            "training_samples",
        ],
        "shapes": [
            "make_shapes_captions",
            "make_shapes_vqa",
            "save_shapes_imagefolder",
            "shapes_scenes",
        ],
        "shapes_scene": ["Scene", "Shape", "generate_scene", "render_scene"],
        "shapes_text": ["scene_captions", "scene_questions"],
        "types": [
            "CaptionExample",
            "DatasetSplit",
            "ImageSource",
            "LazyImage",
            "Skipped",
            "VQAExample",
            "dropped_summary",
            "skip_summary",
            "unique_skips",
        ],
        "vqa": ["ANSWER_COPIES", "read_vg", "read_vqav2"],
    },
)
