"""Write ShapeWorld to disk in the real on-disk formats: raw VLFeedback and the three benchmarks.

Every file is a pure function of the config: each record draws from its own ``random.Random``
seeded by ``stable_seed(seed, stream, index)``, so the same config gives byte-identical files, and
the benchmark streams never share scenes with the training stream.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from mdpo_pipeline.core.io import atomic_dir, atomic_path, stable_seed, write_json, write_jsonl
from mdpo_pipeline.shapeworld.config import MAX_OBJECTS, ShapeWorldConfig
from mdpo_pipeline.shapeworld.feedback import (
    Mention,
    has_text_cue,
    make_instruction,
)
from mdpo_pipeline.shapeworld.world import (
    CATEGORIES,
    COLOURS,
    LOOKALIKE_PAIRS,
    OPPOSITE,
    VOCABULARY,
    Scene,
    absent_candidates,
    article,
    head_noun,
    number_word,
    pick_hallucination,
    plural,
    relation,
    render_scene,
    sample_scene,
    synonym_lines,
)

JPEG_QUALITY = 92


def save_jpeg(image: Image.Image, path: Path) -> None:
    """Write a JPEG with fixed settings, so the same pixels always give the same bytes."""
    image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)


def _progress(items: Iterable, enabled: bool, desc: str) -> Iterator:
    if not enabled:
        return iter(items)

    return iter(tqdm(items, desc=desc))


def _rng(cfg: ShapeWorldConfig, stream: str, index: int | str) -> random.Random:
    return random.Random(stable_seed(cfg.seed, stream, index))


def _sizes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


# --- VLFeedback ---------------------------------------------------------------------------------


def instruction_id(index: int) -> str:
    """The id of the world's ``index``-th instruction (``sw-000123``)."""
    return f"sw-{index:06d}"


def draw_instruction(cfg: ShapeWorldConfig, index: int) -> tuple[str, dict]:
    """The world's ``index``-th instruction and its source, drawn from its own seeded stream: the same every time,
    so the counterfactual provider can redraw one exactly (shapeworld/counterfactual.py)."""
    rng = _rng(cfg, "vlfeedback", index)
    source = rng.choices(tuple(cfg.source_mix), tuple(cfg.source_mix.values()))[0]
    return source, make_instruction(rng, cfg)


def generate_vlfeedback(cfg: ShapeWorldConfig, out_dir: str | Path, progress: bool = False) -> dict:
    """Write raw VLFeedback files (vlfeedback_80k.jsonl, merged_images/, instruction_source.jsonl) plus
    the shapeworld_truth.jsonl sidecar into ``out_dir``; return a summary of what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, source_rows, truth_rows = [], [], []
    cue = {True: [0, 0], False: [0, 0]}  # unconditional flag -> [best/worst pairs with a text cue, pairs]
    with atomic_dir(out / "merged_images") as images:
        for i in _progress(range(cfg.n_instructions), progress, "vlfeedback"):
            source, inst = draw_instruction(cfg, i)
            iid = instruction_id(i)
            save_jpeg(render_scene(inst["scene"], cfg.image_size), images / f"{iid}.jpg")
            rows.append({"id": iid, **{k: inst[k] for k in ("prompt", "models", "completions")}})
            source_rows.append({"id": iid, "source": source})
            truth_rows.append({"id": iid, "source": source, **inst["truth"]})
            scores = inst["scores"]
            best, worst = scores.index(max(scores)), scores.index(min(scores))
            if scores[best] > scores[worst]:
                texts = [c["response"] for c in inst["completions"]]
                tally = cue[inst["truth"]["unconditional"]]
                tally[0] += has_text_cue(texts[best], texts[worst])
                tally[1] += 1
    write_jsonl(source_rows, out / "instruction_source.jsonl")
    write_jsonl(truth_rows, out / "shapeworld_truth.jsonl")
    write_jsonl(rows, out / "vlfeedback_80k.jsonl")  # written last: its presence marks a complete set
    ratings = [a["Rating"] for r in rows for c in r["completions"] for a in c["annotations"].values()]
    n_uncond = sum(t["unconditional"] for t in truth_rows)
    files = _sizes(out)
    return {
        "n_instructions": len(rows),
        "by_source": dict(sorted(Counter(r["source"] for r in source_rows).items())),
        "by_kind": dict(sorted(Counter(t["kind"] for t in truth_rows).items())),
        "unconditional_share": n_uncond / len(rows),
        # Measured: among best-vs-worst pairs, the share a text-only rule could separate.
        "text_cue_share": {
            "unconditional": cue[True][0] / cue[True][1] if cue[True][1] else None,
            "conditional": cue[False][0] / cue[False][1] if cue[False][1] else None,
        },
        "non_numeric_ratings": sum(not r.isdigit() for r in ratings),
        "n_images": sum(1 for k in files if k.startswith("merged_images/")),
        "bytes": {k: v for k, v in files.items() if "/" not in k}
        | {"merged_images": sum(v for k, v in files.items() if k.startswith("merged_images/"))},
    }


# --- benchmarks ---------------------------------------------------------------------------------


def _phrase(category: str) -> str:
    return f"{article(category)} {category}"


def _unique(scene: Scene) -> list:
    return [o for o in scene.objects if scene.count(o.category) == 1]


#: format not verified: the real AMBER existence queries read "Is there a {object} in this image?"
#: and attribute/relation ones "Is the {object} {state} in this image?" / "Is there direct contact
#: between the {a} and {b}?". ShapeWorld objects never touch, so relation items ask about position.
def _amber_items(kind: str, scene: Scene, hallu: list[str], rng: random.Random, round_: int) -> list[tuple]:
    """Discriminative (query, type, truth) items of one kind for one image in one round."""
    if kind == "existence":
        return [(f"Is there {_phrase(hallu[round_])} in this image?", "discriminative-hallucination", "no")] if (
            round_ < len(hallu)
        ) else []
    if kind == "attribute":
        if rng.random() < 0.5 and _unique(scene):
            obj = rng.choice(_unique(scene))
            other = rng.choice([c for c in COLOURS if c != obj.colour])
            qs = [(obj.colour, "yes"), (other, "no")]
            return [(f"Is the {obj.category} {c} in this image?", "discriminative-attribute-state", t) for c, t in qs]
        cat = rng.choice(sorted(scene.categories))
        n = scene.count(cat)
        wrong = n + 1 if n == 1 or rng.random() < 0.5 else n - 1

        def ask(m: int) -> str:
            return f"Is there one {cat} in this image?" if m == 1 else (
                f"Are there {number_word(m)} {plural(cat)} in this image?"
            )

        return [(ask(m), "discriminative-attribute-number", t) for m, t in ((n, "yes"), (wrong, "no"))]
    unique = _unique(scene)
    if len(unique) < 2:
        return []
    a, b = rng.sample(unique, 2)
    rel = relation(a, b)
    return [
        (f"Is the {a.category} {r} the {b.category} in this image?", "discriminative-relation", t)
        for r, t in ((rel, "yes"), (OPPOSITE[rel], "no"))
    ]


def _write_amber(cfg: ShapeWorldConfig, root: Path, progress: bool) -> dict:
    annotations, q_gen, scenes = [], [], []
    with atomic_dir(root) as tmp:
        (tmp / "image").mkdir()
        (tmp / "data" / "query").mkdir(parents=True)
        for k in _progress(range(1, cfg.amber_generative + 1), progress, "amber"):
            rng = _rng(cfg, "amber", k)
            # Some images repeat a category, so that number questions have answers above one.
            required = (rng.choice(CATEGORIES),) * 2 if rng.random() < 0.3 else ()
            scene = sample_scene(rng, cfg, required=required)
            save_jpeg(render_scene(scene, cfg.image_size), tmp / "image" / f"AMBER_{k}.jpg")
            partners, looks, rest = absent_candidates(scene)
            rng.shuffle(rest)
            hallu = (partners + looks + rest)[:5]
            truth = list(dict.fromkeys(head_noun(o.category) for o in scene.reading_order()))
            annotations.append({"id": k, "type": "generative", "truth": truth, "hallu": [head_noun(c) for c in hallu]})
            q_gen.append({"id": k, "image": f"AMBER_{k}.jpg", "query": "Describe this image."})
            scenes.append((scene, hallu))

        # Real AMBER's mix: attribute 7,628, existence 4,924, relation 1,664 of 14,216 (docs/benchmarks.md, "AMBER").
        n = cfg.amber_discriminative
        quotas = {"existence": round(n * 4924 / 14216), "relation": round(n * 1664 / 14216)}
        quotas = {"attribute": n - sum(quotas.values()), **quotas}
        queries: dict[str, list] = {}
        next_id = cfg.amber_generative + 1
        for kind, quota in quotas.items():
            items: list[tuple] = []
            # Round-robin over images spreads the items; each image's items then stay together.
            for round_ in range(quota + 1):
                before = len(items)
                for k, (scene, hallu) in enumerate(scenes, start=1):
                    if len(items) >= quota:
                        break
                    new = _amber_items(kind, scene, hallu, _rng(cfg, f"amber-{kind}", f"{k}-{round_}"), round_)
                    items += [(k, round_, *it) for it in new[: quota - len(items)]]
                if len(items) >= quota or len(items) == before:
                    break
            items.sort(key=lambda it: (it[0], it[1]))
            queries[kind] = []
            for k, _, query, typ, truth in items:
                annotations.append({"id": next_id, "type": typ, "truth": truth})
                queries[kind].append({"id": next_id, "image": f"AMBER_{k}.jpg", "query": query})
                next_id += 1

        data = tmp / "data"
        write_json(annotations, data / "annotations.json")
        discriminative = [q for kind in quotas for q in queries[kind]]
        write_json(q_gen, data / "query" / "query_generative.json")
        write_json(discriminative, data / "query" / "query_discriminative.json")
        write_json(q_gen + discriminative, data / "query" / "query_all.json")
        for kind in quotas:
            write_json(queries[kind], data / "query" / f"query_discriminative-{kind}.json")
        # The scorer's object vocabulary: each object word -> the other words that name the same object.
        relations = {}
        for name, entry in VOCABULARY.items():
            key = head_noun(name)
            words = {head_noun(s) for s in entry["synonyms"]} | {
                p for s, p in entry["plurals"].items() if p != s + "s" and p != s + "es"
            }
            relations[key] = sorted(words - {key})
        write_json(relations, data / "relation.json")
        # Nouns the scorer must never count as objects: scene words, and a colour that is also a noun.
        (data / "safe_words.txt").write_text("\n".join(("orange", "shape", "object", "background", "image", "picture")))
        # The official scorer starts its counters from this file; .001 keeps empty categories from dividing by 0.
        counters = ["chair", "safe_cover", "hallu_cover", "non_hallu", "qa_correct", "qa_no", "qa_ans_no"]
        counters += [f"{p}_{c}" for p in ("as", "an", "aa", "asso", "ha") for c in ("qa_correct", "qa_no", "qa_ans_no")]
        (data / "metrics.txt").write_text("\n".join(f"{c}_num=0.001\n{c}_score=0" for c in counters))
    by_type = Counter(a["type"] for a in annotations)
    return {"images": len(scenes), "items": len(annotations), "by_type": dict(sorted(by_type.items()))}


#: Object HalBench's first prompt (docs/benchmarks.md, "Object HalBench (CHAIR)") and seven of the same kind.
OBJECT_HALBENCH_PROMPTS: tuple[str, ...] = (
    "Provide a thorough description of the given image.",
    "What is this photo about? Please answer in great detail.",
    "Describe the following image in detail.",
    "Give a detailed account of everything you can see in this image.",
    "Please describe this picture as completely as you can.",
    "Explain in detail what is shown in the image.",
    "Write a detailed description of the given image, covering every object.",
    "Could you describe the contents of this image thoroughly?",
)
_CAPTION_TEMPLATES = (
    "{} on {} background.",
    "A simple drawing of {} on {} surface.",
    "An image with {} against {} backdrop.",
    "{} shown on a plain {} background.",
    "A picture of {} on {} paper.",
)


def _caption(scene: Scene, rng: random.Random) -> str:
    """One human-style reference caption: synonyms, counts, and weak objects sometimes left out."""
    groups = Counter(o.category for o in scene.reading_order() if not (o.weak and rng.random() < 0.5))
    if not groups:
        groups = Counter([scene.reading_order()[0].category])
    parts = []
    for cat, n in groups.items():
        name = cat if rng.random() < 0.6 else rng.choice(VOCABULARY[cat]["synonyms"])
        if n == 1:
            colour = next(o.colour for o in scene.objects if o.category == cat)
            parts.append(f"{article(colour)} {colour} {name}")
        else:
            parts.append(f"{number_word(n)} {plural(name)}")
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    template = rng.choice(_CAPTION_TEMPLATES)
    bg = scene.background
    bg = bg if "plain" in template or "paper" in template else f"{article(bg)} {bg}"
    text = template.format(body, bg)
    return text[0].upper() + text[1:]


def _write_object_halbench(cfg: ShapeWorldConfig, root: Path, progress: bool) -> dict:
    # COCO val2014 ids lie below 581,930; drawing from that range keeps ids COCO-looking and unique.
    ids = sorted(_rng(cfg, "object_halbench-ids", 0).sample(range(1, 581930), cfg.object_halbench))
    cat_ids = {c: i for i, c in enumerate(CATEGORIES, start=1)}
    images, instances, captions, prompts = [], [], [], []
    size = cfg.image_size
    with atomic_dir(root) as tmp:
        (tmp / "images").mkdir()
        for image_id in _progress(ids, progress, "object_halbench"):
            rng = _rng(cfg, "object_halbench", image_id)
            required = (rng.choice(CATEGORIES),) * 2 if rng.random() < 0.2 else ()
            scene = sample_scene(rng, cfg, required=required)
            file_name = f"COCO_val2014_{image_id:012d}.jpg"
            save_jpeg(render_scene(scene, size), tmp / "images" / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            for obj in scene.objects:
                x0, y0, x1, y1 = (round(v * size, 2) for v in obj.bbox)
                instances.append(
                    {
                        "id": len(instances) + 1,
                        "image_id": image_id,
                        "category_id": cat_ids[obj.category],
                        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                        "area": round((x1 - x0) * (y1 - y0), 2),
                        "iscrowd": 0,
                        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                    }
                )
            for _ in range(5):
                captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": _caption(scene, rng)})
            prompts.append({"image_id": image_id, "image": file_name, "question": rng.choice(OBJECT_HALBENCH_PROMPTS)})
        info = {"description": "ShapeWorld stand-in for the Object HalBench COCO val2014 images", "version": "1.0"}
        categories = [{"id": i, "name": c, "supercategory": "shape"} for c, i in cat_ids.items()]
        ann = tmp / "annotations"
        write_json({"info": info, "licenses": [], "images": images, "annotations": instances, "categories": categories},
                   ann / "instances.json")
        write_json({"info": info, "licenses": [], "images": images, "annotations": captions}, ann / "captions.json")
        # format not verified: RLHF-V ships its 300 questions in its own jsonl; this keeps image_id + question.
        write_jsonl(prompts, tmp / "prompts.jsonl")
    return {"images": len(images), "instances": len(instances), "captions": len(captions)}


MMHAL_TYPES: tuple[str, ...] = (
    "attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other",
)
#: One topic per block of 8 records, as MMHal-Bench groups its questions (its topics are real-world
#: ones like "outdoor" or "kitchen"; these are ShapeWorld's, each shaping the scene).
MMHAL_TOPICS: tuple[str, ...] = (
    "round shapes", "angular shapes", "symbols", "small objects", "large objects", "crowded",
    "look-alikes", "co-occurrence", "low contrast", "occlusion", "one colour", "many colours",
)
_TOPIC_POOLS = {
    "round shapes": ("circle", "ellipse", "ring", "half moon", "heart"),
    "angular shapes": ("square", "diamond", "bar", "triangle", "trapezoid", "hexagon"),
    "symbols": ("star", "cross", "plus sign", "arrow", "heart"),
}


def _mmhal_scene(cfg: ShapeWorldConfig, rng: random.Random, topic: str, qtype: str) -> Scene:
    pool = _TOPIC_POOLS.get(topic, CATEGORIES)
    required: tuple[str, ...] = ()
    if topic == "look-alikes":
        required = rng.choice(LOOKALIKE_PAIRS)
    elif topic == "co-occurrence":
        required = (rng.choice(("star", "heart", "triangle", "cross", "ring")),)
    if qtype == "counting":
        required += (rng.choice([c for c in pool if c not in required]),) * rng.randint(2, 3)
    n = max(2, len(required) + 1, rng.randint(cfg.min_objects, cfg.max_objects))
    if topic == "crowded":
        n = max(n, cfg.max_objects, 4)
    scene = sample_scene(rng, cfg, n_objects=min(n, MAX_OBJECTS), required=required, pool=pool,
                         size={"small objects": "small", "large objects": "large"}.get(topic))
    objs = list(scene.objects)
    pick = rng.randrange(len(objs))
    if topic == "low contrast":
        objs[pick] = replace(objs[pick], low_contrast=True)
    elif topic == "occlusion":
        objs[pick] = replace(objs[pick], occluded=True)
    elif topic == "one colour":
        objs = [replace(o, colour=objs[0].colour) for o in objs]
    elif topic == "many colours":
        objs = [replace(o, colour=c) for o, c in zip(objs, rng.sample(tuple(COLOURS), len(objs)))]
    return replace(scene, objects=tuple(objs))


def _mmhal_question(scene: Scene, rng: random.Random, qtype: str) -> tuple[str, str]:
    unique = _unique(scene)
    if qtype == "attribute":
        o = rng.choice(unique)
        return f"What colour is the {o.category} in the image?", f"The {o.category} is {o.colour}."
    if qtype == "adversarial":
        absent, present = pick_hallucination(scene, rng, 1.0), rng.choice(scene.objects)
        names = sorted({o.category for o in scene.objects})
        listing = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return (f"What colour is the {absent} next to the {present.category}?",
                f"There is no {absent} in the image; it only shows {listing}.")
    if qtype == "counting":
        cat = max(sorted(scene.categories), key=scene.count)
        return (f"How many {plural(cat)} are there in the image?",
                f"There are {number_word(scene.count(cat))} {plural(cat)} in the image.")
    if qtype == "environment":
        return ("What does the background of the image look like?",
                f"The background is a plain {scene.background} surface with a faint texture.")
    description = ", ".join(Mention.of(o).text() for o in scene.reading_order())
    if qtype == "holistic":
        return ("Describe the image in detail.",
                f"The image shows {description}, all drawn flat on a {scene.background} textured background.")
    if qtype == "other":
        top = min(scene.objects, key=lambda o: o.center[1])
        return ("Which object is closest to the top of the image?",
                f"The {top.colour} {top.category} is closest to the top of the image.")
    a, b = rng.sample(unique, 2)
    if qtype == "relation":
        return (f"Where is the {a.category} relative to the {b.category}?",
                f"The {a.category} is {relation(a, b)} the {b.category}.")
    side = {o: max(o.bbox[2] - o.bbox[0], o.bbox[3] - o.bbox[1]) for o in (a, b)}
    if max(side.values()) < 1.15 * min(side.values()):
        answer = f"The {a.category} and the {b.category} are about the same size."
    else:
        big, small = (a, b) if side[a] > side[b] else (b, a)
        answer = f"The {big.category} is larger than the {small.category}."
    return f"Which is larger, the {a.category} or the {b.category}?", answer


def _write_mmhal(cfg: ShapeWorldConfig, root: Path, progress: bool) -> dict:
    records = []
    with atomic_dir(root) as tmp:
        (tmp / "images").mkdir()
        for i in _progress(range(cfg.mmhal), progress, "mmhal"):
            qtype, topic = MMHAL_TYPES[i % 8], MMHAL_TOPICS[(i // 8) % len(MMHAL_TOPICS)]
            rng = _rng(cfg, "mmhal", i)
            scene = _mmhal_scene(cfg, rng, topic, qtype)
            question, answer = _mmhal_question(scene, rng, qtype)
            image_id = f"{stable_seed(cfg.seed, 'mmhal-image', i):016x}"
            save_jpeg(render_scene(scene, cfg.image_size), tmp / "images" / f"{image_id}.jpg")
            records.append(
                {
                    "question_type": qtype,
                    "question_topic": topic,
                    "image_id": image_id,
                    # Loaders take the file name from the URL's last segment: it matches images/{image_id}.jpg.
                    "image_src": f"https://shapeworld.invalid/mmhal/{image_id}.jpg",
                    "image_content": sorted({o.category.capitalize() for o in scene.objects}),
                    "question": question,
                    "gt_answer": answer,
                    "model_answer": "",
                }
            )
        write_json(records, tmp / "response_template.json")
    return {"records": len(records), "by_type": dict(sorted(Counter(r["question_type"] for r in records).items()))}


#: POPE's question template ("Is there a {object} in the image?"), with the article English wants.
POPE_QUESTION = "Is there {} {} in the image?"


def _pope_absent(split: str, scene: Scene, k: int, rng: random.Random, popularity: list[str]) -> list[str]:
    """k absent categories as each POPE split draws them: at random, the most frequent ones, or the ones most
    likely to be hallucinated beside those present (co-occurrence partners, then look-alikes)."""
    partners, looks, rest = absent_candidates(scene)
    absent = [c for c in CATEGORIES if c not in scene.categories]
    if split == "random":
        return rng.sample(absent, k)
    if split == "popular":
        return [c for c in popularity if c in absent][:k]
    ranked = partners + looks + [c for c in popularity if c in rest]
    return ranked[:k]


def _write_pope(cfg: ShapeWorldConfig, root: Path, progress: bool) -> dict:
    """POPE's three splits over ``cfg.pope`` images, in the official file layout (``shapeworld_pope_{split}.json``)."""
    scenes = []
    with atomic_dir(root) as tmp:
        (tmp / "images").mkdir()
        for i in _progress(range(cfg.pope), progress, "pope"):
            scene = sample_scene(_rng(cfg, "pope", i), cfg)
            name = f"shapeworld_pope_{i:06d}.jpg"
            save_jpeg(render_scene(scene, cfg.image_size), tmp / "images" / name)
            scenes.append((name, scene))
        # "Popular" in POPE means frequent in the dataset's annotations: here, in these very scenes.
        counts = Counter(c for _, scene in scenes for c in scene.categories)
        popularity = sorted(CATEGORIES, key=lambda c: (-counts[c], c))
        sizes = {}
        for split in ("random", "popular", "adversarial"):
            rows = []
            for i, (name, scene) in enumerate(scenes):
                rng = _rng(cfg, f"pope-{split}", i)
                present = sorted(scene.categories)
                absent = _pope_absent(split, scene, len(present), rng, popularity)
                for category, label in [*((c, "yes") for c in present), *((c, "no") for c in absent)]:
                    rows.append({"question_id": len(rows) + 1, "image": name, "text": POPE_QUESTION.format(article(category), category),
                                 "label": label})
            write_jsonl(rows, tmp / f"shapeworld_pope_{split}.json")
            sizes[split] = len(rows)
    return {"images": len(scenes), "questions": sizes}


def generate_benchmarks(cfg: ShapeWorldConfig, out_dir: str | Path, progress: bool = False) -> dict:
    """Write held-out AMBER, Object HalBench, MMHal-Bench and POPE splits plus synonyms.txt into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "amber": _write_amber(cfg, out / "amber", progress),
        "object_halbench": _write_object_halbench(cfg, out / "object_halbench", progress),
        "mmhal": _write_mmhal(cfg, out / "mmhal", progress),
        "pope": _write_pope(cfg, out / "pope", progress),
    }
    lines = synonym_lines()
    with atomic_path(out / "synonyms.txt") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    summary["synonyms"] = len(lines)
    summary["bytes"] = {name: sum(_sizes(out / name).values()) for name in ("amber", "object_halbench", "mmhal", "pope")}
    return summary
