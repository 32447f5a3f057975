"""Every reader on small files in the real formats, including broken entries and wrong files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from prsl.data import read_dataset
from prsl.data.captions import read_coco, read_flickr, read_imagefolder, read_karpathy
from prsl.data.images import load_images
from prsl.data.types import CaptionExample, Skipped, VQAExample
from prsl.data.vqa import ANSWER_COPIES, read_vg, read_vqav2


def image(path: Path, colour=(0, 128, 255)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def references(split) -> dict[str, tuple[str, ...]]:
    return {e.image_id: e.references for e in split.examples}


# --- COCO official -------------------------------------------------------------------------------


@pytest.fixture
def coco(tmp_path):
    image(tmp_path / "val2014" / "a.jpg")
    image(tmp_path / "val2014" / "c.jpg")
    image(tmp_path / "val2014" / "d.jpg")
    data = {
        "info": {},
        "images": [
            {"id": 3, "file_name": "c.jpg"},
            {"id": 1, "file_name": "a.jpg"},
            {"id": 2, "file_name": "b.jpg"},  # no such file
            {"id": 4, "file_name": "d.jpg"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A dog  on a\nsofa. "},
            {"id": 11, "image_id": 3, "caption": "A cat."},
            {"id": 12, "image_id": 1, "caption": "   "},
            {"id": 13, "image_id": 2, "caption": "Never read."},
            {"id": 14, "image_id": 1, "caption": "A brown dog."},
            {"id": 15, "image_id": 4, "caption": ""},
        ],
    }
    return write_json(tmp_path / "captions_val2014.json", data), tmp_path / "val2014"


def test_coco_reads_references_in_file_order(coco):
    annotations, image_dir = coco
    split = read_coco(annotations, image_dir)
    assert split.task == "caption"
    assert [e.image_id for e in split.examples] == ["3", "1"]
    first = split.examples[1]
    assert first == CaptionExample(
        str(image_dir / "a.jpg"), ("A dog on a sofa.", "A brown dog."), "1"
    )
    # One entry per image left out; the empty caption of a kept image is a dropped reference.
    assert split.skipped == [
        Skipped(str(image_dir / "b.jpg"), "image file not found", "2"),
        Skipped(
            str(image_dir / "d.jpg"),
            "no non-empty caption (annotation 15 in captions_val2014.json)",
            "4",
        ),
    ]
    assert split.dropped == [
        Skipped(
            str(image_dir / "a.jpg"), "empty caption (annotation 12 in captions_val2014.json)", "1"
        ),
    ]


def test_coco_max_examples_stops_early(coco):
    split = read_coco(*coco, max_examples=1)
    assert [e.image_id for e in split.examples] == ["3"]
    assert split.skipped == []


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_max_examples_must_be_positive(coco, bad):
    with pytest.raises(ValueError, match="max_examples must be a positive int or None"):
        read_coco(*coco, max_examples=bad)


def test_coco_wrong_formats_name_file_format_and_entry(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text("{not json")
    with pytest.raises(
        ValueError, match=r"ann\.json is not in the expected format.*not valid JSON"
    ):
        read_coco(path, tmp_path)
    write_json(path, {"images": []})
    with pytest.raises(ValueError, match=r"COCO captions JSON.*missing key 'annotations'"):
        read_coco(path, tmp_path)
    write_json(
        path,
        {
            "images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"image_id": 1, "text": "x"}],
        },
    )
    with pytest.raises(ValueError) as info:
        read_coco(path, tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "missing key 'caption'" in message
    assert '{"image_id": 1, "text": "x"}' in message
    write_json(path, {"images": [], "annotations": [{"image_id": 9, "caption": "x"}]})
    with pytest.raises(ValueError, match="annotation for image_id 9 not in 'images'"):
        read_coco(path, tmp_path)
    write_json(
        path,
        {
            "images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"image_id": 1, "caption": 5}],
        },
    )
    with pytest.raises(ValueError, match="text must be a string, got 5"):
        read_coco(path, tmp_path)


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_coco(tmp_path / "absent.json", tmp_path)


# --- Karpathy ------------------------------------------------------------------------------------


def karpathy_entry(filename, split, sentences, **extra):
    return {
        "filename": filename,
        "split": split,
        "sentences": [{"raw": s} for s in sentences],
    } | extra


def test_karpathy_coco_style_uses_filepath_and_cocoid(tmp_path):
    image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    image(tmp_path / "train2014" / "COCO_train2014_000000000007.jpg")
    data = {
        "dataset": "coco",
        "images": [
            karpathy_entry(
                "COCO_val2014_000000000042.jpg",
                "test",
                ["a man riding a horse", " "],
                filepath="val2014",
                cocoid=42,
                imgid=0,
            ),
            karpathy_entry(
                "COCO_train2014_000000000007.jpg",
                "restval",
                ["a bus"],
                filepath="train2014",
                cocoid=7,
                imgid=1,
            ),
        ],
    }
    path = write_json(tmp_path / "dataset_coco.json", data)
    test = read_karpathy(path, tmp_path, split="test")
    assert references(test) == {"42": ("a man riding a horse",)}
    assert test.examples[0].image == str(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    assert test.skipped == []
    assert test.dropped[0].reason.startswith("empty caption (sentence 1 of COCO_val2014")
    train = read_karpathy(path, tmp_path, split=["train", "restval"])
    assert references(train) == {"7": ("a bus",)}


def test_karpathy_flickr_style_has_no_filepath(tmp_path):
    image(tmp_path / "img" / "1000.jpg")
    data = {
        "dataset": "flickr8k",
        "images": [
            karpathy_entry("1000.jpg", "val", ["a child", "a girl"], imgid=5),
            karpathy_entry("2000.jpg", "val", ["absent"], imgid=6),
        ],
    }
    split = read_karpathy(write_json(tmp_path / "d.json", data), tmp_path / "img", split="val")
    assert references(split) == {"5": ("a child", "a girl")}
    assert split.skipped == [
        Skipped(str(tmp_path / "img" / "2000.jpg"), "image file not found", "6")
    ]


def test_karpathy_rejects_unknown_split_and_wrong_format(tmp_path):
    path = write_json(tmp_path / "d.json", {"images": [{"filename": "a.jpg", "split": "test"}]})
    with pytest.raises(ValueError, match=r"split must be one or more of \['train', 'val'"):
        read_karpathy(path, tmp_path, split="dev")
    with pytest.raises(ValueError, match=r"Karpathy split JSON.*missing key 'sentences'.*a\.jpg"):
        read_karpathy(path, tmp_path, split="test")


# --- Flickr CSV ----------------------------------------------------------------------------------


def test_flickr8k_captions_txt(tmp_path):
    image(tmp_path / "Images" / "1000_a.jpg")
    image(tmp_path / "Images" / "2000_b.jpg")
    (tmp_path / "captions.txt").write_text(
        "image,caption\n"
        "1000_a.jpg,A child in a pink dress .\n"
        '1000_a.jpg,"A girl, smiling ."\n'
        "2000_b.jpg,A dog , running , outside\n"
        "2000_b.jpg,   \n"
        "3000_c.jpg,Gone\n"
        "\n"
    )
    split = read_flickr(tmp_path / "captions.txt", tmp_path / "Images")
    assert references(split) == {
        "1000_a.jpg": ("A child in a pink dress .", "A girl, smiling ."),
        "2000_b.jpg": ("A dog , running , outside",),
    }
    assert split.skipped == [
        Skipped(str(tmp_path / "Images" / "3000_c.jpg"), "image file not found", "3000_c.jpg"),
    ]
    assert split.dropped == [
        Skipped(str(tmp_path / "Images" / "2000_b.jpg"), "empty caption (line 5)", "2000_b.jpg"),
    ]


def test_flickr30k_pipe_csv_skips_its_malformed_row(tmp_path):
    image(tmp_path / "flickr30k_images" / "1000092795.jpg")
    image(tmp_path / "flickr30k_images" / "2199200615.jpg")
    (tmp_path / "results.csv").write_text(
        "image_name| comment_number| comment\n"
        "1000092795.jpg| 0| Two young guys with shaggy hair .\n"
        "1000092795.jpg| 1| Two friends enjoy time spent together .\n"
        "2199200615.jpg| 4   A dog runs across the grass .\n"
        "2199200615.jpg| 0| A dog | a ball .\n"
    )
    split = read_flickr(tmp_path / "results.csv", tmp_path / "flickr30k_images")
    assert references(split) == {
        "1000092795.jpg": (
            "Two young guys with shaggy hair .",
            "Two friends enjoy time spent together .",
        ),
        "2199200615.jpg": ("A dog | a ball .",),
    }
    assert len(split.skipped) == 1
    assert split.skipped[0].path == f"{tmp_path / 'results.csv'}:4"
    assert split.skipped[0].reason.startswith("malformed row")


@pytest.mark.parametrize("header", ["file,text", "image_name| comment", '{"images": []}'])
def test_flickr_wrong_header_is_a_format_error(tmp_path, header):
    path = tmp_path / "captions.txt"
    path.write_text(header + "\na.jpg,x\n")
    with pytest.raises(ValueError) as info:
        read_flickr(path, tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "image,caption" in message and "image_name| comment_number| comment" in message
    assert "wrong column names" in message


# --- image folder --------------------------------------------------------------------------------


def test_imagefolder_groups_rows_per_file(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "sub" / "b.png")
    (tmp_path / "metadata.csv").write_text(
        "file_name,text,extra\n"
        "a.png,first caption,1\n"
        'sub/b.png,"multi, comma",2\n'
        "a.png,second caption,3\n"
        "c.png,gone,4\n"
        "a.png,,5\n"
        ",orphan caption,6\n"
    )
    split = read_imagefolder(tmp_path)
    assert references(split) == {
        "a.png": ("first caption", "second caption"),
        "sub/b.png": ("multi, comma",),
    }
    assert split.examples[1].image == str(tmp_path / "sub" / "b.png")
    assert split.skipped[1:] == [Skipped(str(tmp_path / "c.png"), "image file not found", "c.png")]
    assert split.dropped == [Skipped(str(tmp_path / "a.png"), "empty caption (line 6)", "a.png")]
    assert split.skipped[0].path == f"{tmp_path / 'metadata.csv'}:7"
    assert split.skipped[0].reason.startswith("malformed row")


def test_imagefolder_wrong_columns_and_missing_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metadata.csv"):
        read_imagefolder(tmp_path)
    (tmp_path / "metadata.csv").write_text("image,caption\na.png,x\n")
    with pytest.raises(
        ValueError, match=r"metadata\.csv.*'file_name,text'.*\['image', 'caption'\]"
    ):
        read_imagefolder(tmp_path)


# --- VQAv2 ---------------------------------------------------------------------------------------


def answers(*texts):
    return [{"answer": t, "answer_confidence": "yes", "answer_id": i} for i, t in enumerate(texts)]


@pytest.fixture
def vqav2(tmp_path):
    image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    questions = {
        "data_subtype": "val2014",
        "questions": [
            {"image_id": 42, "question": "What color is the bus?", "question_id": 420},
            {"image_id": 42, "question": "  ", "question_id": 421},
            {"image_id": 7, "question": "Is it sunny?", "question_id": 70},
            {"image_id": 42, "question": "How many?", "question_id": 422},
        ],
    }
    annotations = {
        "annotations": [
            {
                "question_id": 420,
                "image_id": 42,
                "answers": answers(*["red"] * 9, "orange"),
                "multiple_choice_answer": "red",
            },
            {
                "question_id": 421,
                "image_id": 42,
                "answers": answers("x"),
                "multiple_choice_answer": "x",
            },
            {
                "question_id": 70,
                "image_id": 7,
                "answers": answers("yes"),
                "multiple_choice_answer": "yes",
            },
            {
                "question_id": 422,
                "image_id": 42,
                "answers": answers("", " "),
                "multiple_choice_answer": "",
            },
        ]
    }
    q = write_json(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", questions)
    a = write_json(tmp_path / "v2_mscoco_val2014_annotations.json", annotations)
    return q, a, tmp_path / "val2014"


def test_vqav2_default_coco_naming(vqav2):
    q, a, image_dir = vqav2
    split = read_vqav2(q, a, image_dir)
    assert split.task == "vqa"
    assert split.examples == [
        VQAExample(
            str(image_dir / "COCO_val2014_000000000042.jpg"),
            "What color is the bus?",
            ("red",) * 9 + ("orange",),
            "42",
            "420",
        )
    ]
    reasons = [(Path(s.path).name, s.reason.split(" (")[0]) for s in split.skipped]
    assert reasons == [
        ("COCO_val2014_000000000042.jpg", "empty question"),
        ("COCO_val2014_000000000007.jpg", "image file not found"),
        ("COCO_val2014_000000000042.jpg", "no non-empty answer"),
    ]


def test_vqav2_custom_pattern_and_subset(vqav2, tmp_path):
    q, a, _ = vqav2
    image(tmp_path / "flat" / "7.png")
    split = read_vqav2(q, a, tmp_path / "flat", image_pattern="{image_id}.png")
    assert [e.question_id for e in split.examples] == ["70"]
    assert split.examples[0].image == str(tmp_path / "flat" / "7.png")
    image(tmp_path / "test" / "COCO_test2015_000000000007.jpg")
    split = read_vqav2(q, a, tmp_path / "test", subset="test2015")
    assert [e.question_id for e in split.examples] == ["70"]


def test_vqav2_pattern_errors(vqav2, tmp_path):
    q, a, image_dir = vqav2
    with pytest.raises(ValueError, match=r"must contain \{image_id\}"):
        read_vqav2(q, a, image_dir, image_pattern="image.jpg")
    with pytest.raises(ValueError, match=r"may only use the fields \['image_id', 'subset'\]"):
        read_vqav2(q, a, image_dir, image_pattern="{split}_{image_id}.jpg")
    no_subtype = write_json(tmp_path / "q.json", {"questions": []})
    with pytest.raises(ValueError, match="has no 'data_subtype': pass subset="):
        read_vqav2(no_subtype, a, image_dir)


def test_vqav2_question_without_annotation_is_a_format_error(vqav2, tmp_path):
    q, _, image_dir = vqav2
    partial = write_json(
        tmp_path / "a.json", {"annotations": [{"question_id": 420, "answers": []}]}
    )
    with pytest.raises(ValueError, match=r"no annotation for question_id 421.*same split"):
        read_vqav2(q, partial, image_dir)
    wrong = write_json(tmp_path / "b.json", {"annotations": [{"question_id": 420}]})
    with pytest.raises(ValueError, match=r"b\.json.*VQAv2 annotations JSON.*missing key 'answers'"):
        read_vqav2(q, wrong, image_dir)


# --- Visual Genome -------------------------------------------------------------------------------


def test_vg_reads_two_image_folders_and_repeats_answers(tmp_path):
    image(tmp_path / "VG_100K" / "1.jpg")
    image(tmp_path / "VG_100K_2" / "2.jpg")
    data = [
        {
            "id": 1,
            "qas": [
                {
                    "qa_id": 10,
                    "image_id": 1,
                    "question": "What color is the clock?",
                    "answer": "Green.",
                },
                {"qa_id": 11, "image_id": 1, "question": "Where?", "answer": "  "},
            ],
        },
        {"id": 2, "qas": [{"qa_id": 20, "question": "What is it?", "answer": "A sign."}]},
        {"id": 3, "qas": [{"qa_id": 30, "image_id": 3, "question": "Why?", "answer": "No."}]},
        {"id": 4, "qas": []},
    ]
    path = write_json(tmp_path / "question_answers.json", data)
    split = read_vg(path, [tmp_path / "VG_100K", tmp_path / "VG_100K_2"])
    assert split.examples == [
        VQAExample(
            str(tmp_path / "VG_100K" / "1.jpg"),
            "What color is the clock?",
            ("Green.",) * ANSWER_COPIES,
            "1",
            "10",
        ),
        VQAExample(
            str(tmp_path / "VG_100K_2" / "2.jpg"),
            "What is it?",
            ("A sign.",) * ANSWER_COPIES,
            "2",
            "20",
        ),
    ]
    assert [(s.path, s.reason) for s in split.skipped] == [
        (
            str(tmp_path / "VG_100K" / "1.jpg"),
            "no non-empty answer (qa 11 in question_answers.json)",
        ),
        (
            str(tmp_path / "VG_100K" / "3.jpg"),
            "image file not found (qa 30 in question_answers.json)",
        ),
    ]
    assert len(read_vg(path, tmp_path / "VG_100K", max_examples=1).examples) == 1


def test_vg_wrong_formats(tmp_path):
    path = write_json(tmp_path / "qa.json", {"images": []})
    with pytest.raises(ValueError, match="top level must be a list"):
        read_vg(path, tmp_path)
    write_json(path, [{"qas": []}])
    with pytest.raises(ValueError, match="no 'id' or 'image_id'"):
        read_vg(path, tmp_path)
    write_json(path, [{"id": 1, "qas": [{"question": "q?", "answer": "a"}]}])
    with pytest.raises(ValueError, match=r"missing key 'qa_id'.*\"question\": \"q\?\""):
        read_vg(path, tmp_path)
    write_json(path, [{"id": "x1", "qas": [{"qa_id": 1, "question": "q?", "answer": "a"}]}])
    with pytest.raises(ValueError, match="image ids usable in image_pattern"):
        read_vg(path, tmp_path, image_pattern="{image_id:05d}.jpg")


# --- registry and loader hand-off ----------------------------------------------------------------


def test_registry_routes_to_the_readers(coco, tmp_path):
    annotations, image_dir = coco
    direct = read_coco(annotations, image_dir)
    assert read_dataset("coco", annotations_file=annotations, image_dir=image_dir) == direct
    assert read_dataset("shapes", n=3, seed=1).examples[0].image_id == "shapes-1-0"
    assert read_dataset("shapes-vqa", n=2, seed=1).task == "vqa"


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'cifar'; valid names: coco, karpathy, "
        r"flickr, imagefolder, vqav2, vg, hf, shapes, shapes-vqa",
    ):
        read_dataset("cifar")
    with pytest.raises(ValueError, match=r"dataset 'shapes'.*'size'.*accepted options: n=512"):
        read_dataset("shapes", size=3)
    with pytest.raises(
        ValueError, match=r"dataset 'imagefolder'.*missing.*accepted options: directory"
    ):
        read_dataset("imagefolder")


def test_reader_keeps_a_corrupt_file_and_the_loader_skips_it(tmp_path):
    image(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "metadata.csv").write_text("file_name,text\nok.png,fine\nbroken.png,bad\n")
    split = read_imagefolder(tmp_path)
    assert len(split.examples) == 2  # readers check existence only; decoding is the loader's job
    batch = load_images([e.image for e in split.examples], (4, 4))
    assert batch.kept == [0]
    assert [s.path for s in batch.skipped] == [str(tmp_path / "broken.png")]
